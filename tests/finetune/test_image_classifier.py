"""run_image_classifier / run_image_classifier_infer: a tiny ViT learns drawn shapes; the original's keys and
preprocessing; an HF ViT converted by our script as the pretrained model; bad input named by file and line."""

from __future__ import annotations

import json
import random
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import CheckpointError, DataError
from tencentpretrain.finetune import image_classifier
from tencentpretrain.finetune.classifier import Classifier
from tencentpretrain.finetune.image_classifier import ImageOptions, load_image, resize_bytes
from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights
from tests.helpers import REPO_ROOT

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

TINY_VIT = {"emb_size": 32, "hidden_size": 32, "feedforward_size": 64, "heads_num": 4, "layers_num": 2,
            "dropout": 0.0, "image_height": 16, "image_width": 16, "patch_size": 4, "max_seq_length": 17}
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]  # class 0, 1, 2


@pytest.fixture(scope="module")
def vit_config_path(tmp_path_factory) -> str:
    config = json.loads((Path(REPO_ROOT) / "models/vit/base-16-224_config.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("vit") / "tiny_vit.json"
    path.write_text(json.dumps({**config, **TINY_VIT}), encoding="utf-8")
    return str(path)


def draw_shape(path: Path, label: int, rng: random.Random) -> None:
    """A 24x24 grey-noise picture with a filled ellipse (0), rectangle (1) or triangle (2) in the label's colour."""
    image = Image.new("RGB", (24, 24), tuple(rng.randint(90, 160) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x, y = rng.randrange(24), rng.randrange(24)
        draw.point((x, y), fill=tuple(rng.randint(60, 190) for _ in range(3)))
    x0, y0 = rng.randint(0, 8), rng.randint(0, 8)
    size = rng.randint(10, 15)
    colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[label])
    box = (x0, y0, x0 + size, y0 + size)
    if label == 0:
        draw.ellipse(box, fill=colour)
    elif label == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0, y0 + size), (x0 + size, y0 + size), (x0 + size // 2, y0)], fill=colour)
    image.save(path)


def write_image_tsv(directory: Path, name: str, n: int, seed: int, *, with_label: bool = True) -> Path:
    """``label<TAB>path`` of ``n`` drawn pictures (PNG files under ``directory``)."""
    rng = random.Random(seed)
    lines = ["label\tpath" if with_label else "path"]
    for i in range(n):
        label = rng.randrange(3)
        image_path = directory / f"{name}_{i}.png"
        draw_shape(image_path, label, rng)
        lines.append(f"{label}\t{image_path}" if with_label else str(image_path))
    tsv = directory / f"{name}.tsv"
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tsv


def _accuracy(caplog) -> list[float]:
    return [float(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("Acc.")]


def _train_args(config_path, files, out, *extra):
    return ["--config_path", config_path, "--train_path", str(files["train"]), "--dev_path", str(files["dev"]),
            "--output_model_path", str(out), "--batch_size", "16", "--learning_rate", "5e-4",
            "--report_steps", "100", *extra]


@pytest.mark.slow
def test_learns_drawn_shapes_and_infer_predicts_what_it_scored(tmp_path, vit_config_path, caplog):
    files = {name: write_image_tsv(tmp_path, name, n, seed) for name, n, seed in
             (("train", 240, 1), ("dev", 60, 2), ("test", 60, 3))}
    out = tmp_path / "vit_classifier.bin"
    caplog.set_level("INFO")
    image_classifier.finetune_main(_train_args(vit_config_path, files, out, "--test_path", str(files["test"]),
                                               "--epochs_num", "5"))
    scores = _accuracy(caplog)
    assert len(scores) == 6  # five dev evaluations, then the test set with the best model
    assert scores[-1] >= 0.9, scores
    keys = list(load_state_dict(str(out)))
    assert keys[:3] == ["embedding.patch.cls_emb", "embedding.patch.projection.weight",
                        "embedding.patch.projection.bias"]
    assert keys[-4:] == ["output_layer_1.weight", "output_layer_1.bias", "output_layer_2.weight", "output_layer_2.bias"]
    assert load_state_dict(str(out))["output_layer_2.bias"].shape == (3,)  # labels counted in the training set

    rows = files["test"].read_text(encoding="utf-8").splitlines()[1:]
    nolabel = tmp_path / "nolabel.tsv"
    nolabel.write_text("path\n" + "\n".join(r.split("\t")[1] for r in rows) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    image_classifier.infer_main(["--config_path", vit_config_path, "--load_model_path", str(out), "--labels_num", "3",
                                 "--test_path", str(nolabel), "--prediction_path", str(prediction),
                                 "--batch_size", "7", "--output_prob"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tprob" and len(lines) == len(rows) + 1
    pred = [int(line.split("\t")[0]) for line in lines[1:]]
    gold = [int(r.split("\t")[0]) for r in rows]
    assert sum(p == g for p, g in zip(pred, gold)) / len(gold) == pytest.approx(scores[-1], abs=1e-4)
    for line in lines[1:]:
        assert sum(float(v) for v in line.split("\t")[1].split()) == pytest.approx(1.0, abs=1e-5)


def test_pixels_are_the_originals_resized_bytes_over_255(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "a.png"
    draw_shape(path, 2, rng)
    options = ImageOptions(16, 16, 3, normalize=False, horizontal_flip=False)
    pixels = load_image(str(path), options)  # (3, 16, 16)
    raw = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())  # (24, 24, 3)
    assert pixels.shape == (3, 16, 16)
    torch.testing.assert_close(pixels * 255, resize_bytes(raw.permute(2, 0, 1), 16, 16).float())
    assert torch.equal(pixels * 255, (pixels * 255).round())  # whole bytes, as the original's uint8 resize
    # a flat picture stays flat; an image of the model's size is not resampled
    flat = torch.full((3, 5, 7), 77, dtype=torch.uint8)
    assert torch.equal(resize_bytes(flat, 16, 16), torch.full((3, 16, 16), 77, dtype=torch.uint8))
    assert resize_bytes(raw.permute(2, 0, 1), 24, 24).data_ptr() == raw.permute(2, 0, 1).data_ptr()
    normalized = load_image(str(path), ImageOptions(16, 16, 3, normalize=True, horizontal_flip=False))
    torch.testing.assert_close(normalized[1], (pixels[1] - 0.4578275) / 0.26130258)


@pytest.mark.slow
def test_an_hf_vit_converted_by_our_script_is_the_pretrained_model(tmp_path, vit_config_path, caplog):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, image_size=16, patch_size=4, num_labels=5)
    torch.manual_seed(3)
    hf = transformers.ViTForImageClassification(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # nonzero biases and cls token
    hf.save_pretrained(tmp_path / "hf_vit")
    converted = tmp_path / "vit.bin"
    runpy.run_path(f"{REPO_ROOT}/scripts/convert_vit_from_huggingface_to_tencentpretrain.py", run_name="not_main")[
        "main"](["--input_model_path", str(tmp_path / "hf_vit"), "--output_model_path", str(converted)])
    config = load_model_config(str(tmp_path / "vit_config.json")).replace(labels_num=3)
    caplog.set_level("INFO")
    model = build_task_model(Classifier, config, 1, str(converted), labels_num=3).eval()
    assert "target.classifier" in caplog.text  # HF's classification head is not used ...
    assert "newly initialised" in caplog.text and "output_layer_1.weight" in caplog.text  # ... ours is fresh
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ours = model.encode(images, torch.ones(2, 17, dtype=torch.long))
        theirs = hf.vit(pixel_values=images).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)

    files = {name: write_image_tsv(tmp_path, name, n, seed) for name, n, seed in (("train", 8, 1), ("dev", 4, 2))}
    out = tmp_path / "finetuned.bin"
    image_classifier.finetune_main(_train_args(str(tmp_path / "vit_config.json"), files, out, "--epochs_num", "1",
                                               "--pretrained_model_path", str(converted)))
    assert set(load_state_dict(str(out))) == set(model.state_dict())


def test_an_original_checkpoint_without_the_patch_bias_loads_strictly_as_a_zero_bias(tmp_path, vit_config_path):
    config = load_model_config(vit_config_path).replace(labels_num=3)
    torch.manual_seed(0)
    model = Classifier(config, 1, labels_num=3)
    model.init_weights()
    original = {k: v for k, v in model.state_dict().items() if k != "embedding.patch.projection.bias"}
    torch.save(original, tmp_path / "original.bin")
    loaded = Classifier(config, 1, labels_num=3)
    load_finetuned_weights(loaded, str(tmp_path / "original.bin"))
    assert torch.equal(loaded.embedding.patch.projection.bias, torch.zeros(32))
    images, seg = torch.rand(2, 3, 16, 16), torch.ones(2, 17, dtype=torch.long)
    with torch.no_grad():
        model.embedding.patch.projection.bias.zero_()
        torch.testing.assert_close(loaded.eval()({"src": images, "seg": seg}).logits,
                                   model.eval()({"src": images, "seg": seg}).logits)
    torch.save({**original, "output_layer_3.weight": torch.zeros(1)}, tmp_path / "extra.bin")
    with pytest.raises(CheckpointError, match="output_layer_3"):
        load_finetuned_weights(Classifier(config, 1, labels_num=3), str(tmp_path / "extra.bin"))


def test_bad_input_is_named_by_file_and_line_and_nothing_is_written(tmp_path, vit_config_path):
    files = {name: write_image_tsv(tmp_path, name, n, seed) for name, n, seed in (("train", 6, 1), ("dev", 3, 2))}
    out = tmp_path / "model.bin"
    lines = files["train"].read_text(encoding="utf-8").splitlines()

    missing = tmp_path / "missing.tsv"
    missing.write_text("\n".join(lines[:3] + ["1\t" + str(tmp_path / "nowhere.png")] + lines[3:]) + "\n",
                       encoding="utf-8")
    with pytest.raises(DataError, match=rf"{missing}, line 4: image file .*nowhere.png' not found"):
        image_classifier.finetune_main(_train_args(vit_config_path, {**files, "train": missing}, out))

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    bad_image = tmp_path / "bad_image.tsv"
    bad_image.write_text("\n".join(lines[:2] + [f"0\t{broken}"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad_image}, line 3: cannot read the image"):
        image_classifier.finetune_main(_train_args(vit_config_path, {**files, "train": bad_image}, out))

    dev_lines = files["dev"].read_text(encoding="utf-8").splitlines()
    out_of_range = tmp_path / "dev_bad_label.tsv"
    labels_num = len({line.split("\t")[0] for line in lines[1:]})
    out_of_range.write_text("\n".join(dev_lines[:2] + [f"{labels_num}\t{dev_lines[1].split(chr(9))[1]}"]) + "\n",
                            encoding="utf-8")
    with pytest.raises(DataError, match=rf"{out_of_range}, line 3: the label {labels_num} is outside"):
        image_classifier.finetune_main(_train_args(vit_config_path, {**files, "dev": out_of_range}, out,
                                                   "--epochs_num", "1"))

    headless = tmp_path / "headless.tsv"
    headless.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{headless}, line 1: the header"):
        image_classifier.finetune_main(_train_args(vit_config_path, {**files, "train": headless}, out))
    assert not out.exists()

    model = Classifier(load_model_config(vit_config_path).replace(labels_num=3), 1, labels_num=3)
    model.init_weights()
    torch.save(model.state_dict(), tmp_path / "trained.bin")
    prediction = tmp_path / "prediction.tsv"
    prediction.write_text("an earlier prediction\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{missing}, line 4: image file"):
        image_classifier.infer_main(["--config_path", vit_config_path, "--load_model_path",
                                     str(tmp_path / "trained.bin"), "--labels_num", "3", "--test_path", str(missing),
                                     "--prediction_path", str(prediction)])
    assert prediction.read_text(encoding="utf-8") == "an earlier prediction\n"

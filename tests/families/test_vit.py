"""ViT: HF parity through the production converter, original keys, image classification training, save/load."""

import pytest
import torch

from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.vit import FAMILY as VIT_HF
from tencentpretrain.convert.hf_family import hf_state_to_internal, internal_state_to_hf
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")


def _hf_model():
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                    image_size=16, patch_size=4, num_labels=5)
    torch.manual_seed(4)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith("bias") or "cls_token" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def test_logits_equal_transformers_and_round_trip():
    hf = _hf_model()
    config, state = hf_state_to_internal(VIT_HF, hf.state_dict(), hf.config.to_dict())
    ours = build_model(config, init=False).eval()
    ours.load_state_dict(state, strict=True)
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(images), hf(pixel_values=images).logits, atol=2e-5, rtol=1e-4)
    hf_config, back = internal_state_to_hf(VIT_HF, state, config, 1)
    original = hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key
    assert VIT_HF.config_from_hf(hf_config) == config


def test_reads_transformers4_key_layout():
    hf = _hf_model()
    legacy = {k.replace("vit.layers.", "vit.encoder.layer.").replace("attention.q_proj", "attention.attention.query")
              .replace("attention.k_proj", "attention.attention.key").replace("attention.v_proj", "attention.attention.value")
              .replace("attention.o_proj", "attention.output.dense").replace("mlp.fc1", "intermediate.dense")
              .replace("mlp.fc2", "output.dense"): v for k, v in hf.state_dict().items()}
    _, from_legacy = hf_state_to_internal(VIT_HF, legacy, hf.config.to_dict())
    _, from_v5 = hf_state_to_internal(VIT_HF, hf.state_dict(), hf.config.to_dict())
    assert from_legacy.keys() == from_v5.keys()


def test_original_config_keys_and_cls_training(tmp_path):
    config = load_model_config(f"{REPO_ROOT}/models/vit/base-16-224_config.json").replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, dropout=0.0, image_height=16,
        image_width=16, patch_size=4, max_seq_length=17, labels_num=3,
    )
    model = build_model(config, vocab_size=1)
    keys = list(model.state_dict())
    assert keys[:4] == ["embedding.patch.cls_emb", "embedding.patch.projection.weight",
                        "embedding.patch.projection.bias", "embedding.pos.embedding.weight"]
    assert keys[-6:] == ["encoder.layer_norm.gamma", "encoder.layer_norm.beta", "target.cls.linear_1.weight",
                         "target.cls.linear_1.bias", "target.cls.linear_2.weight", "target.cls.linear_2.bias"]
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (12,), generator=g)
    images = torch.randn(12, 3, 16, 16, generator=g) * 0.5 + labels[:, None, None, None].float()  # separable
    seg = torch.ones(12, 17, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = model(images, labels, seg).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    path = tmp_path / "vit.bin"
    save_checkpoint(model, str(path))
    again = build_model(config, vocab_size=1, init=False)
    load_checkpoint(again, str(path))
    with torch.no_grad():
        torch.testing.assert_close(again(images, labels, seg).loss, model(images, labels, seg).loss)


def test_evaluate_dataset_loss_of_a_classifier_is_its_mean_classification_loss():
    """The trainer's --eval_dataset_path evaluation of a model without a vocabulary target (ViT): the summed
    cross-entropy of its class logits over the examples, and the number of examples."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from tencentpretrain.evaluation.perplexity import evaluate_dataset_loss

    config = load_model_config(f"{REPO_ROOT}/models/vit/base-16-224_config.json").replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, dropout=0.0, image_height=16,
        image_width=16, patch_size=4, max_seq_length=17, labels_num=3,
    )
    model = build_model(config, vocab_size=1).eval()
    g = torch.Generator().manual_seed(1)
    batches = [SimpleNamespace(src=torch.randn(n, 3, 16, 16, generator=g), tgt=torch.randint(0, 3, (n,), generator=g),
                               seg=torch.ones(n, 17, dtype=torch.long)) for n in (5, 3)]
    loss_sum, examples = evaluate_dataset_loss(model, batches)
    with torch.no_grad():
        class_logits = [model.target.cls.logits(model.target_inputs(b.src, b.seg)[0]) for b in batches]  # (n, 3)
        expected = sum(F.cross_entropy(logits, b.tgt, reduction="sum") for logits, b in zip(class_logits, batches))
    assert examples == 8
    assert loss_sum == pytest.approx(float(expected), rel=1e-5)

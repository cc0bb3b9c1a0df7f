"""Image classification (ViT): ``finetune/run_image_classifier.py`` and ``inference/run_image_classifier_infer.py``.

Data: a TSV with the header ``label<TAB>path`` (inference: ``path`` alone is enough); ``path`` names an image
file, relative to the working directory as in the original. Images are decoded with Pillow
(``pip install 'tencentpretrain[vision]'``) as RGB (grey with ``--channels_num 1``), resized to
``--image_height`` x ``--image_width`` as the original's ``torchvision`` ``Resize`` did (bilinear, antialiased,
rounded back to bytes) and scaled to [0, 1], which is all the original's fine-tuning did.
``--image_preprocess normalize`` also normalizes with the mean and std of the original's ViT pretraining,
``horizontal_flip`` flips training images at random (the original's fine-tuning ignored the flag).

The model is ``classifier.Classifier`` on a ``patch`` + ``pos`` embedding: state keys ``embedding.patch.*``,
``embedding.pos.*``, ``encoder.*``, ``output_layer_1.*``, ``output_layer_2.*``, the original's. The number of
labels is counted in the training set (the original's rule). Reports and predictions are the text classifier's.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tencentpretrain.cli import dataclass_from_args
from tencentpretrain.config import ModelConfig, model_config_from_args, parse_args_with_config
from tencentpretrain.data.processors.vit import import_pillow
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune.classifier import Classifier, evaluate_classifier, write_class_predictions
from tencentpretrain.finetune.data import Example, TsvRow, parse_label, read_tsv
from tencentpretrain.finetune.loop import default_device, fit_on_files, log_file, seed_run
from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    finetune_parser,
    infer_parser,
    required_labels_num,
)

logger = logging.getLogger("tencentpretrain.finetune")

PREPROCESS_CHOICES = ("normalize", "horizontal_flip")
# The normalization of the original's ViT pretraining data (``--image_preprocess normalize``).
NORMALIZE_MEAN = (0.48145466, 0.4578275, 0.40821073)
NORMALIZE_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_VOCAB_SIZE = 1  # a patch embedding has no vocabulary


@dataclass(frozen=True)
class ImageOptions:
    """How image files become model inputs."""

    height: int
    width: int
    channels: int
    normalize: bool
    horizontal_flip: bool

    @classmethod
    def of(cls, config: ModelConfig, preprocess: Sequence[str]) -> ImageOptions:
        if config.channels_num not in (1, 3):
            raise ConfigError(f"channels_num must be 3 (RGB) or 1 (grey) for image files, got {config.channels_num}")
        if "normalize" in preprocess and config.channels_num != 3:
            raise ConfigError("--image_preprocess normalize needs RGB images (channels_num 3)")
        return cls(config.image_height, config.image_width, config.channels_num, "normalize" in preprocess,
                   "horizontal_flip" in preprocess)


# ---------------------------------------------------------------------- images
def resize_bytes(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, height, width) uint8, as ``torchvision.transforms.Resize((height, width))`` on a
    uint8 tensor: bilinear with antialiasing in floating point, rounded back to bytes."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    resized = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False,
                            antialias=True)[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def load_image(path: str, options: ImageOptions) -> torch.Tensor:
    """(C, H, W) float pixels of the image file at ``path``, preprocessed as the original (no random flip)."""
    pillow = import_pillow()
    with pillow.open(path) as image:
        pixels = torch.frombuffer(bytearray(image.convert("RGB" if options.channels == 3 else "L").tobytes()),
                                  dtype=torch.uint8).view(image.height, image.width, options.channels)
    pixels = resize_bytes(pixels.permute(2, 0, 1), options.height, options.width).float().div_(255)
    if options.normalize:
        mean = torch.tensor(NORMALIZE_MEAN).view(3, 1, 1)
        std = torch.tensor(NORMALIZE_STD).view(3, 1, 1)
        pixels = (pixels - mean) / std
    return pixels


def check_image(row: TsvRow) -> str:
    """The ``path`` of ``row`` after checking that it names a readable image (errors name the TSV line)."""
    path = row.get("path")
    pillow = import_pillow()
    try:
        with pillow.open(path) as image:
            image.verify()
    except FileNotFoundError:
        raise row.error(f"image file {path!r} not found (paths are relative to the working directory)") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow reports broken files with any of these
        raise row.error(f"cannot read the image {path!r}: {e}") from None
    return path


# ---------------------------------------------------------------------- data
def count_labels(path: str) -> int:
    """The number of distinct labels in a training TSV (the original's ``count_labels_num``)."""
    return len({parse_label(row) for row in read_tsv(path, ("label", "path"))})


def read_images(path: str, *, labels_num: int | None, with_labels: bool = True) -> list[Example]:
    """Examples of an image TSV: ``path`` (checked to be a readable image), ``where`` (for errors) and ``label``
    when read with labels. Pixels are decoded batch by batch (``image_collate``), as the original did."""
    rows = read_tsv(path, ("label", "path") if with_labels else ("path",))
    examples = []
    for row in rows:
        example: Example = {"path": check_image(row), "where": row.where()}
        if with_labels:
            example["label"] = parse_label(row, labels_num)
        examples.append(example)
    return examples


def image_collate(options: ImageOptions, patches_num: int, *, train: bool = False
                  ) -> Callable[[Sequence[Example]], dict[str, torch.Tensor]]:
    """Batches of ``src`` (B, C, H, W) float, ``seg`` (B, 1 + patches) ones and ``label`` (B,) when known;
    ``train`` applies the random augmentation."""
    def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        images = []
        for example in examples:
            try:
                image = load_image(example["path"], options)
            except (OSError, SyntaxError, ValueError) as e:
                raise DataError(f"{example['where']}: cannot read the image {example['path']!r}: {e}") from None
            if train and options.horizontal_flip and bool(torch.rand(()) < 0.5):
                image = image.flip(-1)
            images.append(image)
        batch = {"src": torch.stack(images), "seg": torch.ones(len(examples), patches_num + 1, dtype=torch.long)}
        if "label" in examples[0]:
            batch["label"] = torch.tensor([e["label"] for e in examples])
        return batch

    return collate


# ---------------------------------------------------------------------- scripts
def add_image_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("images")
    group.add_argument("--image_preprocess", nargs="*", default=[], choices=PREPROCESS_CHOICES,
                       help="besides resizing and scaling to [0, 1]: 'normalize' (the original's pretraining mean "
                            "and std; give it to the inference script too), 'horizontal_flip' (training only)")


def parse_image_run(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                    overrides: Callable[[argparse.Namespace], dict[str, Any]] | None = None
                    ) -> tuple[argparse.Namespace, ModelConfig]:
    """Flags (defaults < JSON at --config_path < flags) and the model config, which must have a ``patch``
    embedding; no tokenizer is built."""
    args, _ = parse_args_with_config(parser, argv)
    for key, value in (overrides(args) if overrides else {}).items():
        setattr(args, key, value)
    config = model_config_from_args(args)
    if "patch" not in config.embedding:
        raise ConfigError(f"{args.config_path}: image classification needs a ViT config (embedding 'patch', e.g. "
                          f"models/vit/base-16-224_config.json), this one has {list(config.embedding)}")
    return args, config


def patches_num(config: ModelConfig) -> int:
    return (config.image_height // config.patch_size) * (config.image_width // config.patch_size)


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_image_classifier.py``."""
    args, config = parse_image_run(finetune_parser(__doc__, add_image_flags), argv,
                                   lambda a: {"labels_num": count_labels(a.train_path)})
    options: FinetuneOptions = dataclass_from_args(FinetuneOptions, args)
    images = ImageOptions.of(config, args.image_preprocess)
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(Classifier, config, PATCH_VOCAB_SIZE, options.pretrained_model_path,
                                 labels_num=config.labels_num)

        def read(path: str) -> list[Example]:
            return read_images(path, labels_num=config.labels_num)

        train = read(options.train_path)
        evaluate_collate = image_collate(images, patches_num(config))
        fit_on_files(model, args, read, train=train, collate=image_collate(images, patches_num(config), train=True),
                     evaluate=lambda m, ex: evaluate_classifier(m, ex, options.batch_size, evaluate_collate))


def add_image_infer_flags(parser: argparse.ArgumentParser) -> None:
    add_image_flags(parser)
    group = parser.add_argument_group("classification")
    group.add_argument("--output_logits", action="store_true", help="also write the logits of every label")
    group.add_argument("--output_prob", action="store_true", help="also write the probability of every label")


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_image_classifier_infer.py``."""
    args, config = parse_image_run(infer_parser(__doc__, add_image_infer_flags), argv)
    options: InferOptions = dataclass_from_args(InferOptions, args)
    model = Classifier(config, PATCH_VOCAB_SIZE, labels_num=required_labels_num(config.labels_num))
    load_finetuned_weights(model, options.load_model_path)
    model.to(default_device())
    examples = read_images(options.test_path, labels_num=config.labels_num, with_labels=False)
    if not examples:
        raise DataError(f"{options.test_path}: no images to predict")
    logger.info("The number of prediction instances: %d", len(examples))
    write_class_predictions(options.prediction_path, model, examples, options.batch_size,
                            image_collate(ImageOptions.of(config, args.image_preprocess), patches_num(config)),
                            logits=args.output_logits, prob=args.output_prob)

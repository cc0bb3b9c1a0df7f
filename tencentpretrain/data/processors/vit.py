"""``vit``: image classification data for the Vision Transformer, from a TSV of labels and image paths.

Each line is ``label<TAB>path`` (or ``path<TAB>label``: the integer field is the label); a ``label<TAB>path``
header line is skipped. A relative path is looked up next to the TSV file first, then in the working directory.
Images are decoded with Pillow (``pip install tencentpretrain[vision]``), converted to RGB (or grayscale with
``--channels_num 1``) and resized to ``--image_height`` x ``--image_width`` (bilinear, as HF's
``ViTImageProcessor``). The dataset stores the pixels (H, W, C) uint8 in ``tokens.bin`` and the labels in
``labels.npy``, so training reads no image files.

Batches: ``src`` (B, C, H, W) float, ``pixel / 255`` normalized with mean 0.5 and std 0.5 (HF ViT's default),
``tgt`` (B,) labels, ``seg`` and ``loss_mask`` ones over the 1 + patches tokens the model makes of an image.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.processors.base import BadLine, Instance, Processor, SkipSample, check_targets
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.targets.output import LABELS_CLASS

IMAGE_MEAN = 0.5  # per channel, after scaling to [0, 1]
IMAGE_STD = 0.5
HEADER_NAMES = {"label", "path"}


def import_pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("data processor 'vit' decodes images with Pillow: pip install 'tencentpretrain[vision]' "
                          "(or pip install pillow)") from None
    return Image


def load_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """(H, W, C) uint8 pixels of the image file at ``path``, resized (bilinear) and converted to RGB or L."""
    image_module = import_pillow()
    with image_module.open(path) as image:
        image = image.convert("RGB" if channels == 3 else "L")
        if image.size != (width, height):
            image = image.resize((width, height), image_module.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(height, width, channels)


@DATA_PROCESSORS.register("vit")
class VitProcessor(Processor):
    """``label<TAB>path`` lines -> (pixels, label) instances."""

    name = "vit"
    provides_labels = (LABELS_CLASS,)
    uses_mask = False
    cuts_instances = False
    has_labels = True
    needs_tokenizer = False

    def __init__(self, tokenizer: Any, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        import_pillow()
        self.base_dir = os.path.dirname(os.path.abspath(config.corpus_path))
        self.shape = (config.image_height, config.image_width, config.channels_num)

    def payload_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def options(self) -> dict[str, Any]:
        h, w, c = self.shape
        return {"image_height": h, "image_width": w, "channels_num": c, "mean": IMAGE_MEAN, "std": IMAGE_STD}

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        if not line.strip():
            raise SkipSample("empty_line")
        label, path = self._fields(line)
        resolved = self._resolve(path)
        try:
            pixels = load_image(resolved, *self.shape)
        except (OSError, ValueError) as e:
            raise BadLine("bad_image", f"cannot read image {path!r}: {e}") from None
        return [Instance(pixels.reshape(-1), None, label=label)]

    def _fields(self, line: str) -> tuple[int, str]:
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
        if len(fields) != 2:
            raise BadLine("bad_field", f"expected 'label<TAB>path', got {len(fields)} tab-separated fields")
        if {f.lower() for f in fields} == HEADER_NAMES:
            raise SkipSample("header")
        for i, field in enumerate(fields):
            if field.lstrip("-").isdigit():
                label = int(field)
                if label < 0:
                    raise BadLine("bad_field", f"the label must be >= 0, got {label}")
                return label, fields[1 - i]
        raise BadLine("bad_field", f"no integer label in {fields!r}")

    def _resolve(self, path: str) -> str:
        if os.path.isabs(path):
            candidates = [path]
        else:
            candidates = [os.path.join(self.base_dir, path), os.path.abspath(path)]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise BadLine("missing_image", f"image not found: {path!r} (looked in {' and '.join(candidates)})")

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        if model_config is None:
            raise ConfigError("vit batches need the model config (patch_size, image size): pass model_config to "
                              "the loader")
        check_targets(cls.name, cls.provides_labels, model_config)
        return ImageCollator(dataset, model_config)


class ImageCollator:
    """Stacks stored pixels into normalized (B, C, H, W) images with their labels."""

    def __init__(self, dataset: IndexedDataset, model_config: Any) -> None:
        options = dataset.options
        self.dataset = dataset
        self.shape = (int(options["image_height"]), int(options["image_width"]), int(options["channels_num"]))
        self.mean, self.std = float(options["mean"]), float(options["std"])
        c = model_config
        expected = (c.image_height, c.image_width, c.channels_num)
        if expected != self.shape:
            raise ConfigError(
                f"{dataset.path} holds {self.shape[0]}x{self.shape[1]} images with {self.shape[2]} channel(s), the "
                f"model takes {expected[0]}x{expected[1]} with {expected[2]}: run preprocess.py with --image_height "
                f"{expected[0]} --image_width {expected[1]} --channels_num {expected[2]}"
            )
        self.tokens = (c.image_height // c.patch_size) * (c.image_width // c.patch_size) + 1  # [CLS] + patches
        self.labels_num = c.labels_num

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Batch  # the loader imports this package

        pixels = np.stack([np.asarray(self.dataset[int(i)][0]).reshape(self.shape) for i in indices])  # (B, H, W, C)
        labels = np.asarray([self.dataset.label(int(i)) for i in indices], dtype=np.int64)  # (B,)
        if self.labels_num is not None and labels.max() >= self.labels_num:
            raise ConfigError(f"{self.dataset.path}: label {int(labels.max())} is out of range for labels_num="
                              f"{self.labels_num}; set labels_num in the config (or --labels_num)")
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W) in [0, 1]
        images = images.sub_(self.mean).div_(self.std)
        ones = torch.ones(len(indices), self.tokens, dtype=torch.long)  # (B, 1 + P)
        return Batch(images.contiguous(), torch.from_numpy(labels), ones, ones.bool())

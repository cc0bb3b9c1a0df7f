"""Registered embeddings: every module of this package registers its component on import."""

from tencentpretrain.registry import import_submodules

import_submodules(__name__)

"""Registered data processors: every module of this package registers its processor on import."""

from tencentpretrain.registry import import_submodules

import_submodules(__name__)

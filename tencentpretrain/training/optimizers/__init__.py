"""Registered optimizers: every module of this package registers one factory on import.

A factory is ``build(param_groups, config: OptimConfig) -> torch.optim.Optimizer``; add one with a new file that
decorates its factory with ``@OPTIMIZERS.register(name)``.
"""

from tencentpretrain.registry import import_submodules

import_submodules(__name__)

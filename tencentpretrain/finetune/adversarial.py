"""Adversarial training on the embedding weights (``--use_adv --adv_type fgm|pgd``), as the original: the
gradient of the loss moves the embedding tables, the model takes a second (PGD: --pgd_k) forward and backward
pass there, and the tables are put back before the optimizer step, which sees the summed gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

EMBEDDING_PREFIX = "embedding."


def _embedding_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and n.startswith(EMBEDDING_PREFIX)]


def _step_along_gradient(param: nn.Parameter, size: float) -> None:
    """param += size * grad / |grad| (nothing when the gradient is zero or not finite)."""
    if param.grad is None:
        return
    norm = torch.linalg.vector_norm(param.grad)
    if norm != 0 and torch.isfinite(norm):
        param.data.add_(param.grad, alpha=size / norm.item())


def fgm_step(model: nn.Module, backward: Callable[[], torch.Tensor], epsilon: float) -> None:
    """Fast Gradient Method: one attack of size ``epsilon``, one extra backward pass, then restore."""
    saved = {n: p.data.clone() for n, p in _embedding_parameters(model)}
    for _, p in _embedding_parameters(model):
        _step_along_gradient(p, epsilon)
    backward()
    for n, p in _embedding_parameters(model):
        p.data.copy_(saved[n])


def pgd_step(model: nn.Module, backward: Callable[[], torch.Tensor], *, k: int, epsilon: float,
             alpha: float) -> None:
    """Projected Gradient Descent: ``k`` attacks of size ``alpha`` kept within ``epsilon`` of the weights; the
    gradients of the first k-1 attacks only steer, the last one's are added to the clean gradients."""
    embedding = _embedding_parameters(model)
    saved = {n: p.data.clone() for n, p in embedding}
    clean_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for t in range(k):
        for n, p in embedding:
            _step_along_gradient(p, alpha)
            delta = p.data - saved[n]
            norm = torch.linalg.vector_norm(delta)
            if norm > epsilon:
                p.data.copy_(saved[n] + delta * (epsilon / norm))
        if t < k - 1:
            model.zero_grad(set_to_none=False)
        else:
            for n, p in model.named_parameters():
                if n in clean_grads:
                    p.grad.copy_(clean_grads[n])
        backward()
    for n, p in embedding:
        p.data.copy_(saved[n])

"""Encoder-decoder generation (T5 and other ``decoder`` models): encode once, decode with a KV cache.

``generate_seq2seq`` runs the encoder over the source, then feeds the decoder one token at a time through
its self-attention cache, stopping each row at ``eos_id``. Sampling is greedy with ``temperature == 0``,
otherwise top-k / top-p over the temperature-scaled distribution.
"""

from __future__ import annotations

import torch

from tencentpretrain.models.model import Model


def _next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the first token above p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_seq2seq(
    model: Model,
    src: torch.Tensor,
    *,
    seg: torch.Tensor | None = None,
    start_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generated target ids (B, <= max_new_tokens), without the start token; rows that ended are padded
    with ``eos_id``.

    Args:
        src: (B, S) source ids; seg: (B, S) source segment ids, 0 = padding (default: none).
        start_id: the decoder's first input (T5: the pad id 0).
    """
    seg = torch.ones_like(src) if seg is None else seg
    memory = model.hidden_states(src, seg)  # (B, S, H)
    cache = model.new_decoder_kv_cache(src.shape[0], max_new_tokens + 1)
    token = torch.full((src.shape[0], 1), start_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_new_tokens):
        logits = model.target.logits(model.decode(memory, seg, token, cache=cache))[:, -1]  # (B, V)
        nxt = _next_token(logits, temperature, top_k, top_p, generator)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        out.append(nxt)
        token = nxt[:, None]
        if eos_id is not None and bool(done.all()):
            break
    return torch.stack(out, 1) if out else token[:, :0]

"""The pure sampling functions."""

from __future__ import annotations

import pytest
import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.generation.sampling import (
    SamplingParams,
    apply_repetition_penalties,
    apply_repetition_penalty,
    draw,
    filter_sorted,
    repetition_weights,
    sample_next,
)


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, -1.0, 4.0]])
    out = sample_next(logits, [SamplingParams(temperature=0)] * 2, [[], []], [None, None])
    assert out.tolist() == [1, 0]


def test_top_k_and_top_p_keep_exactly_the_expected_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    kept = filter_sorted(logits, torch.tensor([2, 4, 4]), torch.tensor([1.0, 0.8, 0.81]))
    finite = torch.isfinite(kept)
    assert finite.tolist() == [[True, True, False, False], [True, True, False, False], [True, True, True, False]]


def test_draw_follows_the_distribution():
    probs = torch.tensor([[0.2, 0.0, 0.8]]).expand(4, -1)
    picked = draw(probs, torch.tensor([0.0, 0.19, 0.21, 0.999]))
    assert picked.tolist() == [0, 0, 2, 2]


def test_sampling_respects_top_k_over_many_draws():
    logits = torch.tensor([[4.0, 3.9, 3.8, 0.0, -1.0]])
    params = SamplingParams(temperature=1.0, top_k=2, seed=0)
    gen = torch.Generator().manual_seed(0)
    seen = {int(sample_next(logits, [params], [[]], [gen])) for _ in range(200)}
    assert seen == {0, 1}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_within_the_range():
    logits = torch.tensor([2.0, -2.0, 1.0, 4.0])
    out = apply_repetition_penalty(logits, [3, 0, 1], penalty=2.0, window=2)  # token 3 is out of the window
    assert out.tolist() == [1.0, -4.0, 1.0, 4.0]
    assert apply_repetition_penalty(logits, [0], 1.0, 10) is logits


def reference_penalty(logits: torch.Tensor, history: list[int], params: SamplingParams) -> torch.Tensor:
    """Row by row and token by token: each distinct recent token takes the weight of its latest occurrence."""
    out = logits.clone()
    window = params.repetition_penalty_range
    recent = history[-window:] if window > 0 else history
    ramp = repetition_weights(len(recent), params.repetition_penalty, params.repetition_penalty_slope)
    for token in set(recent):
        weight = float(ramp[max(i for i, t in enumerate(recent) if t == token)])
        value = float(logits[token])
        out[token] = value / weight if value > 0 else value * weight
    return out


@pytest.mark.parametrize("slope", [0.0, 2.0])
def test_batched_repetition_penalties_equal_a_row_by_row_reference(slope):
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    histories = [[3, 7, 3, 9, 49, 7, 0], [], [1, 2, 3], list(range(40)) * 2, [5]]
    params = [SamplingParams(repetition_penalty=1.3, repetition_penalty_range=4, repetition_penalty_slope=slope),
              SamplingParams(repetition_penalty=1.3),
              SamplingParams(repetition_penalty=1.0),  # off
              SamplingParams(repetition_penalty=0.8, repetition_penalty_range=0, repetition_penalty_slope=slope),
              SamplingParams(repetition_penalty=2.0, repetition_penalty_slope=slope)]
    out = apply_repetition_penalties(logits, histories, params)
    expected = torch.stack([reference_penalty(row, h, p) if p.repetition_penalty != 1 else row
                            for row, h, p in zip(logits, histories, params)])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(out[2], logits[2]) and torch.equal(out[1], logits[1])


def test_repetition_slope_ramps_towards_recent_tokens():
    w = repetition_weights(5, 2.0, 1.0)
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(2.0)
    assert torch.all(w[1:] >= w[:-1])
    assert torch.equal(repetition_weights(3, 1.5, 0.0), torch.full((3,), 1.5))


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -1},
                                 {"repetition_penalty": 0}])
def test_invalid_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        SamplingParams(**bad)

"""The CRF of run_ner.py --crf_target against brute force over every tag path, and against torchcrf (pytorch-crf,
the package the original used) when it is installed."""

from __future__ import annotations

import itertools

import pytest
import torch

from tencentpretrain.finetune.crf import CRF

TAGS, LENGTH = 3, 4
LENGTHS = [4, 2, 1]  # real positions of each sequence of the batch


def _crf_and_inputs(seed: int = 0):
    torch.manual_seed(seed)
    crf = CRF(TAGS)
    with torch.no_grad():  # larger than the initial +-0.1, so that transitions decide paths
        for parameter in crf.parameters():
            parameter.normal_(0.0, 1.0)
    emissions = torch.randn(len(LENGTHS), LENGTH, TAGS)
    mask = torch.tensor([[t < n for t in range(LENGTH)] for n in LENGTHS])
    tags = torch.randint(0, TAGS, (len(LENGTHS), LENGTH))
    return crf, emissions, mask, tags


@torch.no_grad()
def _path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """The score of one tag path over the first len(path) positions of one sequence (B-less emissions)."""
    score = crf.start_transitions[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score = score + crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
    return float(score + crf.end_transitions[path[-1]])


def test_log_likelihood_log_partition_and_viterbi_equal_brute_force():
    crf, emissions, mask, tags = _crf_and_inputs()
    llh = crf(emissions, tags, mask, reduction="none")
    log_z = crf.log_partition(emissions, mask)
    decoded = crf.decode(emissions, mask)
    for row, n in enumerate(LENGTHS):
        paths = list(itertools.product(range(TAGS), repeat=n))
        scores = torch.tensor([_path_score(crf, emissions[row], p) for p in paths], dtype=torch.float64)
        expected_log_z = torch.logsumexp(scores, dim=0).item()
        assert log_z[row].item() == pytest.approx(expected_log_z, abs=1e-5)
        gold = tuple(tags[row, :n].tolist())
        assert llh[row].item() == pytest.approx(_path_score(crf, emissions[row], gold) - expected_log_z, abs=1e-5)
        assert tuple(decoded[row]) == paths[int(scores.argmax())]
    # the reductions
    assert crf(emissions, tags, mask, reduction="sum").item() == pytest.approx(llh.sum().item(), abs=1e-5)
    assert crf(emissions, tags, mask, reduction="mean").item() == pytest.approx(llh.mean().item(), abs=1e-5)
    assert crf(emissions, tags, mask, reduction="token_mean").item() == pytest.approx(
        llh.sum().item() / sum(LENGTHS), abs=1e-5)


def test_tags_and_emissions_of_padding_do_not_count():
    crf, emissions, mask, tags = _crf_and_inputs(1)
    noisy_emissions, noisy_tags = emissions.clone(), tags.clone()
    noisy_emissions[~mask] = 100.0 * torch.randn(int((~mask).sum()), TAGS)
    noisy_tags[~mask] = torch.randint(0, TAGS, (int((~mask).sum()),))
    torch.testing.assert_close(crf(noisy_emissions, noisy_tags, mask, reduction="none"),
                               crf(emissions, tags, mask, reduction="none"))
    assert crf.decode(noisy_emissions, mask) == crf.decode(emissions, mask)
    assert [len(p) for p in crf.decode(emissions, mask)] == LENGTHS


def test_gradients_of_the_negative_log_likelihood_reach_every_parameter():
    crf, emissions, mask, tags = _crf_and_inputs(2)
    emissions.requires_grad_(True)
    (-crf(emissions, tags, mask, reduction="mean")).backward()
    for name, parameter in crf.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert emissions.grad[~mask].abs().sum() == 0  # padding gets no gradient


def test_bad_masks_are_refused():
    crf, emissions, mask, tags = _crf_and_inputs()
    with pytest.raises(ValueError, match="first position"):
        crf(emissions, tags, torch.zeros_like(mask))
    holed = mask.clone()
    holed[0, 1] = False
    with pytest.raises(ValueError, match="prefix"):
        crf.decode(emissions, holed)
    with pytest.raises(ValueError, match="reduction"):
        crf(emissions, tags, mask, reduction="avg")


def test_parameters_are_torchcrf_s():
    crf = CRF(5)
    assert [(k, tuple(v.shape)) for k, v in crf.state_dict().items()] == [
        ("start_transitions", (5,)), ("end_transitions", (5,)), ("transitions", (5, 5))]
    for parameter in crf.parameters():
        assert parameter.abs().max() <= 0.1  # torchcrf's uniform(-0.1, 0.1)


def test_agrees_with_torchcrf():
    torchcrf = pytest.importorskip("torchcrf")
    crf, emissions, mask, tags = _crf_and_inputs(3)
    theirs = torchcrf.CRF(TAGS, batch_first=True)
    theirs.load_state_dict(crf.state_dict(), strict=True)  # the same keys, both ways
    crf.load_state_dict(theirs.state_dict(), strict=True)
    for reduction in ("none", "sum", "mean", "token_mean"):
        torch.testing.assert_close(crf(emissions, tags, mask, reduction=reduction),
                                   theirs(emissions, tags, mask, reduction=reduction), atol=1e-5, rtol=1e-5)
    assert crf.decode(emissions, mask) == theirs.decode(emissions, mask)
    longer = torch.randn(6, 30, TAGS)
    lengths = [30, 17, 1, 29, 5, 12]
    long_mask = torch.tensor([[t < n for t in range(30)] for n in lengths])
    assert crf.decode(longer, long_mask) == theirs.decode(longer, long_mask)

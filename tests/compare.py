"""Bit-for-bit comparison of two TrainResults, with failure messages that say how
many members differ and by how much."""

import torch


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def assert_bits_equal(name: str, expected: torch.Tensor, actual: torch.Tensor) -> None:
    """torch.equal on the bit patterns (so that NaN equals the same NaN)."""
    assert expected.shape == actual.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if torch.equal(_bits(expected), _bits(actual)):
        return
    differ = _bits(expected) != _bits(actual)
    if differ.dim() > 1:  # history (L, M): count members
        members = differ.any(dim=0)
    else:
        members = differ
    diff = (expected.double() - actual.double()).abs()[differ]
    finite = diff[torch.isfinite(diff)]
    worst = f"{finite.max().item():.3g}" if finite.numel() else "n/a (non-finite)"
    first = differ.nonzero()[0].tolist()
    raise AssertionError(f"{name}: {int(members.sum())} of {members.numel()} members differ "
                         f"(max abs difference {worst}; first at index {first}: "
                         f"expected {expected[tuple(first)].item()!r}, got {actual[tuple(first)].item()!r})")


def assert_same_results(expected, actual) -> None:
    """Weight, bias, diverged_at and history of two runs are equal bit for bit."""
    assert_bits_equal("weight", expected.weight, actual.weight)
    assert_bits_equal("bias", expected.bias, actual.bias)
    assert_bits_equal("diverged_at", expected.diverged_at, actual.diverged_at)
    assert_bits_equal("history_steps", expected.history_steps, actual.history_steps)
    assert (expected.history_weight is None) == (actual.history_weight is None), "one run has a history"
    if expected.history_weight is not None:
        assert_bits_equal("history_weight", expected.history_weight, actual.history_weight)
        assert_bits_equal("history_bias", expected.history_bias, actual.history_bias)

"""Bit-for-bit comparison of two TrainResults, with failure messages that say how
many members differ and by how much; and the member lists the backend tests share."""

import numpy as np
import torch

U64_MAX = 2**64 - 1


def seeds_for(m: int):
    """m seeds that include both ends of the range and values across 2**32."""
    base = [0, U64_MAX, 2**32, 2**32 - 1, 2**63, 42, 7]
    return (base + [(i * 0x9E3779B97F4A7C15) % 2**64 for i in range(m)])[:m]


def lrs_for(m: int):
    """Mostly stable rates, with some that diverge (0.5 and 0.3 blow up on x in [1, 5))."""
    return [(0.5, 0.01, 0.003, 0.3, 0.02)[i % 5] for i in range(m)]


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def assert_bits_equal(name: str, expected: torch.Tensor, actual: torch.Tensor) -> None:
    """torch.equal on the bit patterns (so that NaN equals the same NaN)."""
    assert expected.shape == actual.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if torch.equal(bits(expected), bits(actual)):
        return
    differ = bits(expected) != bits(actual)
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


def assert_same_results(expected, actual, *, members: bool = False) -> None:
    """Weight, bias, diverged_at and history of two runs are equal bit for bit (and, with
    ``members``, their seeds and per-member hyperparameters too)."""
    if members:
        assert np.array_equal(expected.seeds, actual.seeds), "seeds differ"
        assert list(expected.member_options) == list(actual.member_options), "other per-member options"
        for name in ("lrs", *expected.member_options):
            assert_bits_equal(name, getattr(expected, name), getattr(actual, name))
    assert_bits_equal("weight", expected.weight, actual.weight)
    assert_bits_equal("bias", expected.bias, actual.bias)
    assert_bits_equal("diverged_at", expected.diverged_at, actual.diverged_at)
    assert_bits_equal("history_steps", expected.history_steps, actual.history_steps)
    assert (expected.history_weight is None) == (actual.history_weight is None), "one run has a history"
    if expected.history_weight is not None:
        assert_bits_equal("history_weight", expected.history_weight, actual.history_weight)
        assert_bits_equal("history_bias", expected.history_bias, actual.history_bias)

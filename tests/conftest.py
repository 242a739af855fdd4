"""Test set-up: without CUDA, the Triton kernel runs under the Triton interpreter.

``@triton.jit`` reads TRITON_INTERPRET when the kernel's module is imported, so it
is set here, before any test imports ``fastneuron.kernels.triton_sgd``.
"""

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="requires CUDA")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1"


requires_triton = pytest.mark.skipif(not triton_available(), reason="requires triton (CUDA or TRITON_INTERPRET=1)")

#: Devices the equality tests run on: CPU always, CUDA when present.
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

"""Test set-up: without CUDA, the Triton kernel runs under the Triton interpreter.

``@triton.jit`` reads TRITON_INTERPRET when the kernel's module is imported, so it
is set here, before any test imports ``fastneuron.kernels.triton_sgd``.
"""

import json
import os
import pathlib

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

#: The SPEC's known answers. A copy lives beside the tests so that they always run;
#: test_spec_vectors_copy_is_current checks it against ../shared when that is there.
SPEC_VECTORS_PATH = pathlib.Path(__file__).resolve().parent / "spec-vectors.json"
SHARED_SPEC_VECTORS_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "spec-vectors.json"
SPEC_VECTORS = json.loads(SPEC_VECTORS_PATH.read_text())
#: The one test that needs ../shared (the shared SPEC folder of the project, beside this
#: checkout, not part of it) skips without it, saying so.
requires_shared_spec_vectors = pytest.mark.skipif(
    not SHARED_SPEC_VECTORS_PATH.exists(),
    reason=f"{SHARED_SPEC_VECTORS_PATH} (the project's shared SPEC folder, beside this checkout) is absent: "
    "cannot check that tests/spec-vectors.json is a current copy of its spec-vectors.json; the tests use "
    "that copy either way")

"""Test set-up: without CUDA, the Triton kernel runs under the Triton interpreter.

``@triton.jit`` reads TRITON_INTERPRET when the kernel's module is imported, so it
is set here, before any test imports ``fastneuron.kernels.triton_sgd``.
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
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

#: The SPEC's known answers. A copy lives beside the tests so that they always run.
SPEC_VECTORS_PATH = pathlib.Path(__file__).resolve().parent / "spec-vectors.json"
SPEC_VECTORS = json.loads(SPEC_VECTORS_PATH.read_text())
#: The project's own checkouts sit beside its shared SPEC folder (../shared, not part of the
#: repository); there test_spec_vectors_copy_is_current checks that the copy is current. A
#: clone elsewhere has no such folder and no such test: nothing is skipped that a user
#: would have to look up.
SHARED_SPEC_VECTORS_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "spec-vectors.json"


@contextlib.contextmanager
def checkpoint_copies(monkeypatch, folder):
    """Inside, every checkpoint the engine writes is also copied to ``folder/snapNNN.ckpt``;
    yields the list of those copies, in the order written."""
    from fastneuron import engine

    real, snaps = engine.save_checkpoint, []

    def spy(path, spec, **k):
        real(path, spec, **k)
        snaps.append(pathlib.Path(folder) / f"snap{len(snaps):03d}.ckpt")
        shutil.copyfile(path, snaps[-1])

    with monkeypatch.context() as mp:
        mp.setattr(engine, "save_checkpoint", spy)
        yield snaps


#: What the torch.optim oracles run under (SPEC §3c): torch's default CPU kernels (its
#: AVX2/AVX-512 ones fuse lerp, addcmul and add(alpha=) into FMAs), one thread.
ORACLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}


def run_oracle(script, folder, parts=None, timeout=900) -> dict:
    """``python script OUT`` under :data:`ORACLE_ENV` (with ``parts``: that many processes
    at once, ``python script OUT_i i parts``), and the arrays they saved, as tensors by name."""
    folder = pathlib.Path(folder)
    argv = [[str(folder / "oracle.npz")]] if parts is None else \
        [[str(folder / f"{i}.npz"), str(i), str(parts)] for i in range(parts)]
    env = {**os.environ, **ORACLE_ENV}
    procs = [subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in argv]
    results = {}
    for args, proc in zip(argv, procs):
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        with np.load(args[0]) as z:
            results.update({k: torch.from_numpy(z[k]) for k in z.files})
    return results

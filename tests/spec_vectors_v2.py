"""Writes SPEC v2's known answers into tests/spec-vectors.json (keys ``v2_normals`` and
``v2_train``) from the NumPy oracle (tests/spec_numpy.py), which knows nothing of fastneuron
but the SPEC. The v1 keys are the shared file's, untouched.

Run from the repository root: ``python tests/spec_vectors_v2.py``. The schedule of a case
is given by its text; its factors are the closed forms of SPEC §3d, written here again.
"""

import json
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import spec_numpy as S  # noqa: E402

PATH = pathlib.Path(__file__).resolve().parent / "spec-vectors.json"
U64_MAX = 2**64 - 1

#: (words) -> normals: the edge words of SPEC §2b and a few others.
NORMAL_WORDS = [
    ("00000000", "00000000", "00000000", "40000000"),
    ("00000000", "80000000", "00000000", "c0000000"),
    ("ffffffff", "00000000", "ffffffff", "ffffffff"),
    ("80000000", "20000000", "000000ff", "000001ff"),
    ("6cea1ec5", "7f4dbfff", "f99450e5", "664593ce"),
]


def _factors(text: str, steps: int) -> np.ndarray:
    """SPEC §3d's closed forms for the two kinds the cases use."""
    if text.startswith("warmup:"):
        warm, rest = text.split("+")
        p = dict(kv.split("=") for kv in warm[len("warmup:"):].split(","))
        w, s0 = int(p["steps"]), float(p["start"])
        head = [s0 + (1 - s0) * min(t, w) / w for t in range(steps)]
        return np.array(head) * _factors(rest, steps)
    kind, args = text.split(":")
    p = dict(kv.split("=") for kv in args.split(","))
    if kind == "cosine":
        n, f = int(p["t_max"]), float(p.get("floor", 0.0))
        return np.array([f + (1 - f) * (1 + math.cos(math.pi * t / n)) / 2 for t in range(steps)])
    if kind == "step":
        size, gamma = int(p["size"]), float(p["gamma"])
        return np.array([gamma ** (t // size) for t in range(steps)])
    raise ValueError(text)


CASES = [
    dict(seeds=["0", "1", str(U64_MAX)], lrs=[0.01, 0.01, 0.01], steps=3000, options=dict(noise=0.1)),
    dict(seeds=["0", "1", str(U64_MAX), "12345"], lrs=[0.01, 0.02, 0.05, 0.09], steps=1000,
         options=dict(noise=[0.0, 0.5, 1.0, 0.25], batch_size=3)),
    dict(seeds=["0", "1", str(U64_MAX)], lrs=[0.01, 0.1, 0.6], steps=1000,
         options=dict(x_dist="normal", x_mean=0.0, x_std=1.0)),
    dict(seeds=["7", str(U64_MAX)], lrs=[0.05, 0.05], steps=777,
         options=dict(x_dist="normal", x_mean=3.0, x_std=0.5, noise=0.3, momentum=0.9)),
    dict(seeds=["0", "1", str(U64_MAX)], lrs=[0.01, 0.05, 0.2], steps=3000,
         options=dict(lr_schedule="warmup:steps=100,start=0.1+cosine:t_max=3000,floor=0.01")),
    dict(seeds=["3", str(U64_MAX)], lrs=[0.02, 0.08], steps=501,
         options=dict(lr_schedule="step:size=100,gamma=0.5", noise=0.2, momentum=0.5, weight_decay=0.001)),
]


def _bits(a) -> list:
    return [f"{int(v):08x}" for v in np.asarray(a, dtype=np.float32).view(np.uint32)]


def main() -> None:
    data = json.loads(PATH.read_text())
    normals = []
    for words in NORMAL_WORDS:
        z = S.normal_block(*[np.array([int(w, 16)], dtype=np.uint64) for w in words])
        normals.append({"words": list(words), "z_bits": [_bits(v)[0] for v in z]})
    train = []
    for case in CASES:
        opts = dict(case["options"])
        kw = {k: v for k, v in opts.items() if k != "lr_schedule"}
        if "lr_schedule" in opts:
            kw["lr_factors"] = _factors(opts["lr_schedule"], case["steps"])
        run = S.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], **kw)
        train.append({**case, "weight_bits": _bits(run.weight), "bias_bits": _bits(run.bias),
                      "diverged_at": run.diverged_at.tolist()})
    data["v2_about"] = ("SPEC v2's known answers, from tests/spec_numpy.py (tests/spec_vectors_v2.py writes "
                        "them): v2_normals gives a Philox block's four words (hex) and their four normals' "
                        "float32 bits (SPEC §2b); v2_train gives whole runs: options are train()'s keyword "
                        "arguments (noise, x_dist, x_mean, x_std, lr_schedule as its text, batch_size, "
                        "momentum, weight_decay), results as in 'train'.")
    data["v2_normals"] = normals
    data["v2_train"] = train
    PATH.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()

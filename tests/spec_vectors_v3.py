"""Writes SPEC v3's known answers (§6: the single neuron with d inputs, an activation, a loss,
on the teacher problem) into tests/spec-vectors.json under key ``v3_train`` (and its note
``v3_about``), from the NumPy oracle tests/spec_numpy_v3.py, which knows nothing of fastneuron
but the SPEC. Every other key of the file is left as it is (v1 and v2 unchanged, bit for bit).

Run from the repository root: ``python tests/spec_vectors_v3.py``.

A case is ``seeds`` (decimal strings), ``lrs``, ``steps`` and ``options``: keyword arguments of
``spec_numpy_v3.train_v3`` and, with ``problem="teacher"``, of ``fastneuron.train`` (only those
that differ from their defaults; ``inputs`` always). Results: ``weight_bits`` (float32 bits, hex:
a list over members for d = 1, a list over members of lists over coordinates for d > 1),
``bias_bits`` (members), ``diverged_at`` (members).
"""

import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import spec_numpy_v3 as V  # noqa: E402

PATH = pathlib.Path(__file__).resolve().parent / "spec-vectors.json"
U64 = str(2**64 - 1)


def _alt(d: int, hi: float = 1.0, lo: float = -0.5) -> list:
    """A vector teacher a of d values, alternating in sign and size."""
    vals = [hi, lo, 0.25, -1.25, 0.75, -0.125, 2.0]
    return [vals[i % len(vals)] * (1.0 + i / d) for i in range(d)]


CASES = [
    # d = 1: the teacher with the identity is v2's linear problem (with a diverging member at lr 0.6)
    dict(seeds=["0", "1", U64], lrs=[0.01, 0.05, 0.6], steps=1000, options=dict(inputs=1)),
    # d = 1: Adam, Gaussian x, label noise, batch 3
    dict(seeds=["0", "5", U64], lrs=[0.01, 0.05, 0.2], steps=600,
         options=dict(inputs=1, optimizer="adam", x_dist="normal", x_mean=1.0, x_std=2.0, noise=[0.0, 0.5, 1.0],
                      batch_size=3)),
    # d = 1: sigmoid model and target, uniform x around 0, no bias, init_scale != 1
    dict(seeds=["3", U64], lrs=[0.5, 2.0], steps=500,
         options=dict(inputs=1, activation="sigmoid", bias=False, lo=-3.0, hi=3.0, a=1.5, c=-0.5,
                      init_scale=[3.0, 0.5])),
    # d = 2: relu, Gaussian x, vector a, momentum, batch 3
    dict(seeds=["0", "7", U64], lrs=[0.05, 0.02, 0.1], steps=400,
         options=dict(inputs=2, activation="relu", a=[1.5, -0.5], c=0.25, x_dist="normal", momentum=0.9,
                      batch_size=3)),
    # d = 2: erf model against a tanh target, weight decay, uniform x
    dict(seeds=["11", "0"], lrs=[0.1, 0.3], steps=500,
         options=dict(inputs=2, activation="erf", target_activation="tanh", a=[0.75, -1.5], c=0.1, lo=-1.0,
                      hi=1.0, momentum=0.5, nesterov=True, weight_decay=0.001)),
    # d = 2: identity on the default problem (x ~ U[1, 5)): lr 0.5 diverges, lr 0.01 does not
    dict(seeds=["0", "2", U64], lrs=[0.01, 0.5, 0.02], steps=300, options=dict(inputs=2)),
    # d = 7: leaky_relu, Adam, no bias, label noise, uniform x in [-2, 2)
    dict(seeds=["0", "42", U64], lrs=[0.01, 0.003, 0.03], steps=300,
         options=dict(inputs=7, activation="leaky_relu", leaky_slope=0.1, optimizer="adam", bias=False,
                      a=_alt(7), c=-0.5, lo=-2.0, hi=2.0, noise=0.1)),
    # d = 7: sigmoid, Gaussian x, init_scale per member, label noise
    dict(seeds=["1", "2", U64], lrs=[0.5, 0.5, 1.0], steps=500,
         options=dict(inputs=7, activation="sigmoid", x_dist="normal", init_scale=[0.5, 2.0, 1.0],
                      noise=[0.05, 0.0, 0.05], a=_alt(7, 0.5, -0.25), c=0.2)),
    # d = 7: abs, Gaussian x, no bias, label noise
    dict(seeds=["0", "9", U64], lrs=[0.01, 0.02, 0.005], steps=400,
         options=dict(inputs=7, activation="abs", x_dist="normal", bias=False, noise=0.2, a=_alt(7), c=0.5)),
    # d = 7: identity, AdamW with amsgrad, own betas and eps, Gaussian x, label noise
    dict(seeds=["0", "8", U64], lrs=[0.01, 0.03, 0.1], steps=300,
         options=dict(inputs=7, optimizer="adamw", weight_decay=[0.01, 0.1, 0.0], amsgrad=True, betas=[0.8, 0.99],
                      eps=1e-6, x_dist="normal", x_mean=0.5, noise=0.25, a=_alt(7), c=1.5)),
    # d = 7: bce (logistic regression), separable (noise 0), SGD, uniform x in [-1, 1)
    dict(seeds=["0", "3", U64], lrs=[0.1, 0.5, 1.0], steps=400,
         options=dict(inputs=7, loss="bce", a=_alt(7), c=0.1, lo=-1.0, hi=1.0)),
    # d = 64: tanh, Adam with weight decay, Gaussian x (std 0.5), batch 3
    dict(seeds=["0", "13", U64], lrs=[0.003, 0.01, 0.001], steps=300,
         options=dict(inputs=64, activation="tanh", optimizer="adam", weight_decay=0.01, x_dist="normal",
                      x_std=0.5, a=_alt(64, 0.3, -0.2), c=0.0, batch_size=3)),
    # d = 64: square, Gaussian x (std 0.25), SGD, init_scale != 1
    dict(seeds=["0", "21", U64], lrs=[0.001, 0.003, 0.0003], steps=300,
         options=dict(inputs=64, activation="square", x_dist="normal", x_std=0.25, init_scale=0.5,
                      a=_alt(64, 0.5, -0.5), c=0.5)),
    # d = 300: identity, mse, the default x ~ U[1, 5) (a scalar a = 2 for every coordinate)
    dict(seeds=["0", "1", "2", "3", U64], lrs=[1e-5, 3e-5, 1e-4, 2e-5, 5e-5], steps=200,
         options=dict(inputs=300)),
    # d = 300: identity, mse, Gaussian x, momentum, init_scale != 1, label noise, batch 3
    dict(seeds=["0", "1", "2", "3", U64], lrs=[0.0005, 0.001, 0.0002, 0.0005, 0.0008], steps=200,
         options=dict(inputs=300, x_dist="normal", momentum=0.9, init_scale=0.1, noise=[0.0, 0.3, 0.0, 1.0, 0.1],
                      a=_alt(300, 0.1, -0.1), c=-0.25, batch_size=3)),
    # d = 300: bce with label noise, Adam, Gaussian x, no bias, batch 3
    dict(seeds=["0", "1", "2", "3", U64], lrs=[0.01, 0.003, 0.03, 0.01, 0.001], steps=300,
         options=dict(inputs=300, loss="bce", optimizer="adam", x_dist="normal", a=_alt(300), c=0.5,
                      noise=[0.5, 0.5, 0.0, 2.0, 0.5], bias=False, batch_size=3)),
]


def _bits(a) -> list:
    a = np.asarray(a, dtype=np.float32)
    hexes = [f"{int(v):08x}" for v in a.view(np.uint32).reshape(-1)]
    if a.ndim == 2:
        return [hexes[i * a.shape[1]:(i + 1) * a.shape[1]] for i in range(a.shape[0])]
    return hexes


def run_case(case: dict) -> V.RunV3:
    opts = dict(case["options"])
    if "betas" in opts:
        opts["betas"] = tuple(opts["betas"])
    return V.train_v3([int(s) for s in case["seeds"]], case["lrs"], case["steps"], **opts)


def main() -> None:
    text = PATH.read_text()
    data = json.loads(text)
    assert json.dumps(data, indent=1) + "\n" == text, "spec-vectors.json is not in this script's format"
    train = []
    for case in CASES:
        t0 = time.perf_counter()
        run = run_case(case)
        train.append({**case, "weight_bits": _bits(run.weight), "bias_bits": _bits(run.bias),
                      "diverged_at": run.diverged_at.tolist()})
        print(f"d={case['options']['inputs']:4d} {case['options'].get('activation', 'identity'):10s} "
              f"{case['options'].get('loss', 'mse')} {case['options'].get('optimizer', 'sgd'):4s} "
              f"diverged_at={run.diverged_at.tolist()} {time.perf_counter() - t0:.2f} s")
    data["v3_about"] = ("SPEC v3's known answers (§6: nn.Linear(d, 1), an activation, a loss, the teacher "
                        "problem), from tests/spec_numpy_v3.py (tests/spec_vectors_v3.py writes them): each "
                        "case gives seeds, lrs, steps and options (keyword arguments of train with "
                        "problem='teacher', only those that differ from their defaults, inputs always); "
                        "weight_bits are the final float32 bits (hex) per member (d = 1) or per member and "
                        "coordinate (d > 1), bias_bits per member, diverged_at per member.")
    data["v3_train"] = train
    PATH.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()

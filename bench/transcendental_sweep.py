"""SPEC §2c's measured errors: every float32 in the non-saturated domain of exp32, tanh32
and erf32 through the NumPy oracle (its subnormal and finite checks on), torch eager's bits
compared with it, and the error in ulps against float64 (NumPy's exp and tanh,
scipy.special.erf).

    python bench/transcendental_sweep.py exp+ exp- tanh erf

About 55 minutes on the 2-core machine (erf alone 43); results in
bench/results/transcendental-sweep-2026-12-07.txt."""
import json
import sys
import time

import numpy as np
import scipy.special as sp
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))
import spec_numpy as S
from fastneuron import transcendental as T
torch.set_num_threads(1)

def ulp_err(got, exact):
    mag = np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
    ulp = np.exp2(np.floor(np.log2(mag)) - 23)
    return np.abs(got.astype(np.float64) - exact) / ulp

JOBS = {
    "exp+": (S.exp32, T.exp32, np.exp, 0x31800000, 0x42B17218, 0),
    "exp-": (S.exp32, T.exp32, np.exp, 0x31800000, 0x42AEAC50, 0x80000000),
    "tanh": (S.tanh32, T.tanh32, np.tanh, 0x00800000, 0x41200000, 0),
    "erf": (S.erf32, T.erf32, sp.erf, 0x00800000, 0x40C00000, 0),
}
CH = 1 << 23
for name in sys.argv[1:]:
    fn, tfn, ref, lo, hi, sign = JOBS[name]
    t0, worst, n, ndiff, hist = time.time(), (-1.0, None), 0, 0, np.zeros(8, np.int64)
    for start in range(lo, hi, CH):
        b = np.arange(start, min(start + CH, hi), dtype=np.int64) | sign
        x = b.astype(np.uint32).view(np.float32)
        got = fn(x)
        tg = tfn(torch.from_numpy(x)).numpy()
        ndiff += int((tg.view(np.uint32) != got.view(np.uint32)).sum())
        e = ulp_err(got, ref(x.astype(np.float64)))
        hist += np.histogram(e, bins=[0, 0.5, 0.6, 0.75, 1, 1.25, 1.5, 2, 1e9])[0]
        i = int(e.argmax())
        if e[i] > worst[0]:
            worst = (float(e[i]), float(x[i]), hex(int(b[i])))
        n += x.size
    print(json.dumps(dict(name=name, n=n, max_ulp=worst[0], at=worst[1], bits=worst[2], torch_numpy_differ=ndiff,
                          hist=hist.tolist(), secs=round(time.time() - t0))), flush=True)

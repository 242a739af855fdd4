"""Kernel-only speed of backend="triton": one launch of T steps on M members whose state
is already on the device, timed with CUDA events (median of a few runs).

    python bench/kernel_only.py [--members 16777216] [--steps 3000] [--repeats 5]
                                [--fusion off|on|both] [--json PATH]

No engine, no host transfers, no result: the headline number for the kernel itself
(``python -m fastneuron.bench`` times the whole ``train()``). ``--fusion on`` compiles
with ``enable_fp_fusion=True`` (triton_sgd.ENABLE_FP_FUSION): not bit-exact, only to
measure what SPEC §3's no-FMA rule costs. Exit 0 with "no CUDA device" without a GPU.
"""

import argparse
import json
import statistics
import sys

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=2**24)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fusion", choices=("off", "on", "both"), default="off")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_only: no CUDA device")
        return 0
    from fastneuron.kernels import triton_sgd as K
    from fastneuron.optim import SGD, SGDConstants, SGDFlags, SGDOptions
    from fastneuron.problems import LinearTarget
    from fastneuron.reference import Constants, Members, State, StepConfig
    from fastneuron.rng import split_seeds

    dev, m, t = torch.device("cuda"), args.members, args.steps
    s_lo, s_hi = split_seeds(torch.arange(m, dtype=torch.int64))
    lrs = torch.linspace(1e-3, 2e-2, m, dtype=torch.float32)
    members = Members(s_lo=s_lo.to(dev), s_hi=s_hi.to(dev), neg_lr=(-lrs).to(dev),
                      options=SGDOptions(momentum=None, weight_decay=None))
    f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=dev)  # noqa: E731
    consts = Constants(problem=LinearTarget().constants(dev),
                       optimizer=SGDConstants(one_minus_dampening=f32(1.0)), batch=f32(1.0))
    config = StepConfig(batch_size=1, optimizer=SGD, flags=SGDFlags(), problem=LinearTarget)
    stepper = K.TritonStepper()
    w0, b0 = stepper.init(members, config)
    rows = []
    for fusion in {"off": [False], "on": [True], "both": [False, True]}[args.fusion]:
        K.ENABLE_FP_FUSION = fusion
        times = []
        for i in range(args.repeats + 1):  # the first: compile and warm-up
            state = State(w0.clone(), b0.clone(), (), (), torch.full((m,), -1, dtype=torch.int64, device=dev))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            stepper(state, 0, members, consts, nsteps=t, config=config)
            end.record()
            torch.cuda.synchronize()
            if i:
                times.append(start.elapsed_time(end) / 1e3)
        med = statistics.median(times)
        row = dict(members=m, steps=t, enable_fp_fusion=fusion, seconds_median=med, seconds=times,
                   neuron_steps_per_s=m * t / med, diverged=int((state.diverged_at >= 0).sum()))
        rows.append(row)
        print(f"triton kernel only, M={m}, T={t}, enable_fp_fusion={fusion}: {row['neuron_steps_per_s']:.3e} "
              f"neuron-steps/s (median of {len(times)}: {med * 1e3:.1f} ms)", flush=True)
    K.ENABLE_FP_FUSION = False
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "triton": __import__("triton").__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

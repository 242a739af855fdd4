"""The contestants of ``python -m fastneuron.bench``: ways to train the tutorial's problem.

Every contestant trains M independent ``nn.Linear(1, 1)`` neurons for T steps of
per-sample SGD on ``t = 2x + 1`` with ``x ~ U[1, 5)``, member ``m`` with its own
learning rate from a sweep over [1e-3, 2e-2]. Its ``prepare(members, steps, device)``
does the untimed set-up and returns ``run()``, which trains all members once and
returns only when the work is done (CUDA synchronized, JAX blocked on), so that
timing ``run()`` times training and nothing else. A ``run()`` that times only part of
itself (``triton-kernel``: the kernel launches, with CUDA events) returns those seconds.

The peers (tutorial, torch.func, torch eager, jax scan) draw x from their own
random generators: they are timed as equals, not checked bit for bit.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

# The tutorial's problem (SPEC.md §1) and the learning-rate sweep of every run.
A, C, LO, HI = 2.0, 1.0, 1.0, 5.0
LR_LO, LR_HI = 1e-3, 2e-2

Run = Callable[[], Optional[float]]


@dataclass(frozen=True)
class Contestant:
    key: str  #: name on the command line
    name: str  #: name in the table
    peer: bool  #: not fastneuron's own fast path: a baseline of the ratios
    prepare: Callable[[int, int, str], Run]
    #: (device type, --interpret) -> None when it can run, else why it cannot
    unavailable: Callable[[str, bool], Optional[str]]
    #: trains its members one after another, so M is a count of neurons, not a batch
    one_at_a_time: bool = False
    #: whose allocator holds its CUDA memory ("torch" or "jax")
    allocator: str = "torch"
    #: a line for the table's notes
    note: str = ""
    #: its first call compiles (torch.compile, jax.jit, Triton): the table shows compile s
    compiles: bool = False
    #: inputs d of each neuron (SPEC §6): a row's parameter-steps/s are d x its neuron-steps/s
    inputs: int = 1


def lr_sweep(members: int) -> np.ndarray:
    return np.geomspace(LR_LO, LR_HI, members)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _always(device_type: str, interpret: bool) -> Optional[str]:
    return None


# --- tutorial -------------------------------------------------------------------------

def _prepare_tutorial(members: int, steps: int, device: str) -> Run:
    from fastneuron.notebook import train_tutorial

    lrs = lr_sweep(members)

    def run() -> None:
        for lr in lrs:
            train_tutorial(steps, float(lr), print_every=None)

    return run


def _tutorial_unavailable(device_type: str, interpret: bool) -> Optional[str]:
    if device_type != "cpu":
        return "the tutorial's loop is CPU code (see the cpu table)"
    return None


# --- torch.func -----------------------------------------------------------------------

#: Modules actually built for the torch.func recipe; larger ensembles tile their
#: stacked state. Building one nn.Linear per member is set-up that grows with M and is
#: not the recipe's training step.
_TORCH_FUNC_MODULES_BUILT = 1024


def _prepare_torch_func(members: int, steps: int, device: str) -> Run:
    """PyTorch's model-ensembling recipe: stack_module_state + vmap(grad(loss)) + SGD."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, stack_module_state, vmap

    from fastneuron.notebook import Net

    models = [Net().to(device) for _ in range(min(members, _TORCH_FUNC_MODULES_BUILT))]
    params, buffers = stack_module_state(models)
    if members > len(models):
        reps = -(-members // len(models))
        with torch.no_grad():
            params = {k: v.repeat(reps, *[1] * (v.dim() - 1))[:members].clone().requires_grad_()
                      for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    del models

    def loss(p, b, x, t):
        return F.mse_loss(functional_call(base, (p, b), (x,)), t)

    member_grads = vmap(grad(loss))
    neg_lr = -torch.as_tensor(lr_sweep(members), dtype=torch.float32, device=device)
    neg_lr = {k: neg_lr.view(-1, *[1] * (v.dim() - 1)) for k, v in params.items()}

    def run() -> None:
        for _ in range(steps):
            x = torch.rand(members, 1, 1, device=device) * (HI - LO) + LO  # one sample per member
            grads = member_grads(params, buffers, x, A * x + C)
            with torch.no_grad():
                for k, p in params.items():
                    p.add_(grads[k] * neg_lr[k])
        _sync(device)

    return run


# --- fastneuron.train (eager, compile, triton) ----------------------------------------

def _prepare_fastneuron(backend: str, optimizer: str = "sgd", **options) -> Callable[[int, int, str], Run]:
    def prepare(members: int, steps: int, device: str) -> Run:
        import fastneuron

        seeds = np.arange(members, dtype=np.int64)
        lrs = lr_sweep(members)

        def run() -> None:
            fastneuron.train(seeds, lrs, steps, optimizer=optimizer, backend=backend, device=device, progress=False,
                             **options)
            _sync(device)

        return run

    return prepare


def _compile_unavailable(device_type: str, interpret: bool) -> Optional[str]:
    if device_type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")):
        return "torch.compile on CPU needs a C++ compiler (g++) on PATH"
    if device_type == "cuda" and not _importable("triton"):
        return "torch.compile on CUDA needs triton"
    return None


def _triton_unavailable(device_type: str, interpret: bool) -> Optional[str]:
    if not _importable("triton"):
        return "triton is not installed"
    if device_type == "cpu" and not interpret:
        return "requires CUDA (--interpret runs a tiny CPU smoke run under TRITON_INTERPRET=1)"
    return None


def _prepare_triton_kernel(members: int, steps: int, device: str) -> Run:
    """fastneuron's Triton kernel alone: the run's state is built on the device once, and
    each run times only the stepper's launches over T steps (CUDA events, as
    ``triton.testing.do_bench`` does), not the set-up, init or copy back of train()."""
    import torch

    from fastneuron import kernels
    from fastneuron.engine import fresh_state
    from fastneuron.spec import RunSpec

    dev = torch.device(device)
    spec = RunSpec.build(np.arange(members, dtype=np.int64), lr_sweep(members), steps, backend="triton",
                         device=dev, progress=False)
    block = spec.block(0, members, dev)
    consts, config, names = spec.constants(dev), spec.config, spec.state_names()
    stepper = kernels.make_stepper("triton")
    cuda = dev.type == "cuda"

    def steps_of(state) -> None:
        t = 0
        while t < steps:
            n = min(stepper.chunk_steps, steps - t)
            state = stepper(state, t, block, consts, nsteps=n, config=config, history=None)
            t += n

    def run() -> float:
        state = fresh_state(stepper, block, config, names)  # untimed: step 0's (w, b)
        if not cuda:  # the --interpret smoke run
            start = time.perf_counter()
            steps_of(state)
            return time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(dev)
        begin.record()
        steps_of(state)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3  # ms -> s

    return run


def _triton_kernel_unavailable(device_type: str, interpret: bool) -> Optional[str]:
    if not _importable("triton"):
        return "triton is not installed"
    if device_type == "cpu" and not interpret:
        return "needs CUDA (--interpret runs a tiny CPU smoke run under TRITON_INTERPRET=1)"
    return None


# --- jax scan -------------------------------------------------------------------------

def _jax_device(device_type: str):
    import jax

    return jax.devices("gpu" if device_type == "cuda" else "cpu")[0]


def _jax_unavailable(device_type: str, interpret: bool) -> Optional[str]:
    if not _importable("jax"):
        return "jax is not installed (pip install 'fastneuron[bench]')"
    try:
        _jax_device(device_type)
    except RuntimeError as exc:
        return f"jax has no {device_type} backend here ({exc})"
    return None


def _prepare_jax(members: int, steps: int, device: str) -> Run:
    """jax.jit of a lax.scan over steps of the per-sample SGD update, vectorized over members."""
    import jax
    import jax.numpy as jnp

    dev = _jax_device(device.split(":")[0])

    @jax.jit
    def train(w, b, neg_lr):
        def step(wb, step_key):
            w, b = wb
            x = jax.random.uniform(step_key, (members,), jnp.float32, LO, HI)
            g = 2.0 * ((w * x + b) - (A * x + C))  # d/dy of (y - t)**2
            return (w + neg_lr * (g * x), b + neg_lr * g), None

        (w, b), _ = jax.lax.scan(step, (w, b), jax.random.split(jax.random.key(0), steps))
        return w, b

    # Inputs from numpy and the key made inside train: set-up runs no JAX computation,
    # whose first one loads the compiler (40 MB that would count as inputs).
    init = np.random.default_rng(0).uniform(-1.0, 1.0, (2, members)).astype(np.float32)  # nn.Linear's U(-1, 1)
    neg_lr = -lr_sweep(members).astype(np.float32)
    args = jax.device_put((init[0], init[1], neg_lr), dev)

    def run() -> None:
        jax.block_until_ready(train(*args))

    return run


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


CONTESTANTS = [
    Contestant("tutorial", "tutorial", True, _prepare_tutorial, _tutorial_unavailable, one_at_a_time=True,
               note="the tutorial's autograd loop, one neuron after another"),
    Contestant("torch.func", "torch.func", True, _prepare_torch_func, _always,
               note=f"stack_module_state of {_TORCH_FUNC_MODULES_BUILT} modules, tiled to M; "
                    "vmap(grad(mse_loss)); x from torch.rand"),
    Contestant("eager", "torch eager", True, _prepare_fastneuron("eager"), _always,
               note='fastneuron.train(backend="eager"): the reference, torch ops over members'),
    Contestant("jax", "jax scan", True, _prepare_jax, _jax_unavailable, allocator="jax", compiles=True,
               note="jit(lax.scan) over steps, vectorized over members; x from jax.random"),
    Contestant("compile", "fastneuron compile", False, _prepare_fastneuron("compile"), _compile_unavailable,
               compiles=True),
    *(Contestant(f"compile-{opt}", f"fastneuron compile {opt}", False, _prepare_fastneuron("compile", opt),
                 _compile_unavailable, compiles=True, note=f'backend="compile", optimizer="{opt}" (defaults of '
                                                           f'torch.optim.{name}), the same lrs')
      for opt, name in (("adam", "Adam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop"))),
    # SPEC v2 beside SGD's headline: label noise (a second Philox stream and Box-Muller per
    # sample) and an lr schedule (a float64 product per member and step).
    Contestant("compile-noise", "fastneuron compile noise", False, _prepare_fastneuron("compile", noise=0.1),
               _compile_unavailable, compiles=True, note='backend="compile", noise=0.1 (label noise), the same lrs'),
    Contestant("compile-schedule", "fastneuron compile schedule", False,
               _prepare_fastneuron("compile", lr_schedule="warmup:steps=100,start=0.1+cosine:t_max=3000"),
               _compile_unavailable, compiles=True,
               note='backend="compile", lr_schedule="warmup:steps=100,start=0.1+cosine:t_max=3000"'),
    # Issue 22: what a log costs, beside the unlogged headline (bench/log_cost.py measures more k).
    Contestant("compile-log100", "fastneuron compile log100", False, _prepare_fastneuron("compile", log_every=100),
               _compile_unavailable, compiles=True,
               note='backend="compile", log_every=100 (w and b kept every 100 steps), the same lrs'),
    # SPEC v3 (issue 23): 16-input neurons learning a 16-input linear teacher (a = 1/4 in every
    # coordinate, c = 0), x ~ N(0, I) (16 normals a sample) or U[-1, 1)^16; rows give
    # parameter-steps/s (M * 16 * T / time) beside the one-input headline's neuron-steps/s.
    *(Contestant(f"compile-d16-{law}", f"fastneuron compile d16 {law}", False,
                 _prepare_fastneuron("compile", problem="teacher", inputs=16, a=0.25, c=0.0, **kw),
                 _compile_unavailable, compiles=True, inputs=16,
                 note=f'backend="compile", problem="teacher", inputs=16, a=0.25, c=0, {text}, the same lrs')
      for law, kw, text in (("normal", {"x_dist": "normal"}, 'x_dist="normal"'),
                            ("uniform", {"lo": -1.0, "hi": 1.0}, "x ~ U[-1, 1)"))),
    Contestant("triton", "fastneuron triton", False, _prepare_fastneuron("triton"), _triton_unavailable,
               compiles=True),
    Contestant("triton-kernel", "triton kernel only", False, _prepare_triton_kernel, _triton_kernel_unavailable,
               compiles=True,
               note="fastneuron's Triton stepper alone: state built on the device once, only the kernel "
                    "launches over T steps timed (CUDA events); train()'s set-up and copy back excluded"),
]

BY_KEY = {c.key: c for c in CONTESTANTS}

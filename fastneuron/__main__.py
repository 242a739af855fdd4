"""The command line: ``python -m fastneuron train ...`` (installed as ``fastneuron``).

``train`` runs :func:`fastneuron.train` on the product of the given seeds, learning
rates, momenta and weight decays, prints a short summary on stdout and can save the
result (``--out``), checkpoint (``--checkpoint``) and resume (``--resume``). Every
input the Python API refuses ends with one line on stderr, ``fastneuron: error: ...``,
and exit status 2. ``bench`` is handed to ``fastneuron.bench.main`` when that module
exists.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import importlib.util
import inspect
import math
import os
import sys
import time
from typing import Optional

import numpy as np

from .files import check_writable
from .part_writer import is_directory_path
from .cli_values import (  # noqa: F401  (parse_seeds, parse_floats, product: used by tests)
    CLIError, Seeds, count_floats, parse_betas, parse_floats, parse_one_float, parse_seeds, product)

PROG = "fastneuron"

TRAIN_DESCRIPTION = """\
Train one nn.Linear(1, 1) neuron per member by per-sample SGD (or Adam, AdamW, RMSprop:
--optimizer) on the mean squared error against the line a*x + c, with x ~ U[lo, hi)
(SPEC.md). Or a full neuron act(w . x + b) per member (SPEC.md 6): --inputs D (an
nn.Linear(D, 1)), --no-bias, --activation, --loss mse or bce, learning a teacher
target_activation(a . x + c) (--problem teacher, --a one value or D values). The members
are the product seeds x lrs x momentum x weight-decay x noise x init-scale (seeds vary
slowest, as fastneuron.grid; momentum is an axis for sgd only); every other option is
shared by the run. A summary goes to stdout, the progress bar (on a terminal, or with
--progress) to stderr."""

TRAIN_EPILOG = """\
value syntax:
  seeds            0:1000 (start:stop, stop excluded), 0:1000:10 (with a step),
                   3,7,18446744073709551615 (a list), 0:10,100:110 (both); seeds lie
                   in [0, 2**64)
  lrs, momentum,   0.01 (one value), 0.01,0.1 (a list), 1e-4:1e-1:60log (60 values
  weight-decay,    spaced evenly in log, both ends included), 0:0.9:10lin (10 values
  noise,           spaced evenly, both ends included); items can be mixed with commas
  init-scale
  a                one value (every input), or one per input: 1,0,0 or -1:1:8lin
  lr-schedule      cosine:t_max=3000,floor=0.01  step:size=500,gamma=0.5
                   multistep:milestones=1000/2000,gamma=0.1  exponential:gamma=0.999
                   warmup:steps=100,start=0.1+cosine:t_max=3000 (warm-up, then cosine)

examples:
  # the tutorial, once: seed 0, lr 0.01, 3000 steps
  python -m fastneuron train --seeds 0 --lrs 0.01

  # 1000 seeds x 60 learning rates, saved for fastneuron.load
  python -m fastneuron train --seeds 0:1000 --lrs 1e-4:1e-1:60log --out sweep.npz

  # a long run that survives being killed: checkpoint every 30 s, then resume
  python -m fastneuron train --seeds 0:10000000 --lrs 0.01 --checkpoint run.ckpt \\
      --checkpoint-every 30 --out run.npz
  python -m fastneuron train --seeds 0:10000000 --lrs 0.01 --resume run.ckpt --out run.npz

  # momentum and weight decay join the product; log (w, b) every 200 steps
  python -m fastneuron train --seeds 0:100 --lrs 0.01 --momentum 0,0.9 \\
      --weight-decay 0,1e-4 --log-every 200 --out mw.npz

  # label noise (3 levels) on Gaussian inputs, a cosine schedule after a warm-up
  python -m fastneuron train --seeds 0:1000 --lrs 1e-3:1e-1:30log --noise 0,0.1,0.3 \\
      --x-dist normal --x-mean 0 --x-std 1 \\
      --lr-schedule warmup:steps=100,start=0.1+cosine:t_max=3000 --out noise.npz

  # a teacher-student problem: 16 inputs, ReLU neurons without bias, 3 init scales
  python -m fastneuron train --seeds 0:100 --lrs 1e-3:1e-1:20log --problem teacher \\
      --inputs 16 --activation relu --no-bias --a=-1:1:16lin --c 0.5 --lo -1 --hi 1 \\
      --init-scale 0.1,1,3 --log-every 100 --out teacher.npz

  # logistic regression (BCEWithLogitsLoss) on 8 Gaussian inputs, a separable teacher
  python -m fastneuron train --seeds 0:100 --lrs 0.1 --problem teacher --inputs 8 \\
      --loss bce --x-dist normal --a 1 --c 0

  # Adam (torch.optim.Adam, bit for bit) over 60 learning rates
  python -m fastneuron train --seeds 0:100 --lrs 1e-4:1:60log --optimizer adam \\
      --betas 0.9,0.999 --eps 1e-8 --out adam.npz

  # 8 GPUs of one machine, one process each (see fastneuron.distributed for more)
  torchrun --standalone --nproc-per-node 8 -m fastneuron train --seeds 0:100000000 \\
      --lrs 0.01 --distributed --out run.npz

A resumed run must be given the same members and settings as the run that wrote the
checkpoint (backend and device may differ); it keeps checkpointing to the same file
unless --checkpoint names another. Bad input: exit status 2 and one line on stderr."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line on stderr (no usage block)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise CLIError(f"{message} (see '{self.prog} --help')")


# -- value parsers -------------------------------------------------------------


# -- the parser ----------------------------------------------------------------


def _has_bench() -> bool:
    """Whether ``fastneuron.bench`` exists (found, not imported: it may import a lot)."""
    return importlib.util.find_spec("fastneuron.bench") is not None


def build_parser(with_bench: bool = False) -> argparse.ArgumentParser:
    from ._version import __version__
    from .kernels import BACKEND_CHOICES

    top = _Parser(prog=PROG, description="fastneuron: train millions of nn.Linear(1, 1) neurons at once, "
                  "bit for bit as the PyTorch reference.",
                  epilog="Run 'fastneuron train --help' for the options of a run.")
    top.add_argument("--version", action="version", version=f"fastneuron {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    tr = sub.add_parser("train", help="train a population of neurons", description=TRAIN_DESCRIPTION,
                        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    if with_bench:
        sub.add_parser("bench", help="benchmarks (fastneuron.bench; see 'fastneuron bench --help')",
                       add_help=False)

    g = tr.add_argument_group("members (their product is the population)")
    g.add_argument("--seeds", required=True, metavar="SEEDS",
                   help="seeds: 0:1000, 0:1000:10, 1,2,3 (see below)")
    g.add_argument("--lrs", default="0.01", metavar="LRS",
                   help="learning rates: 0.01, 0.01,0.1, 1e-4:1e-1:60log, 0.01:0.1:10lin (default: 0.01)")
    g.add_argument("--momentum", default=None, metavar="MU",
                   help="sgd: momentum value(s) in [0, 1) (default: 0); rmsprop: its one run-wide momentum >= 0")
    g.add_argument("--weight-decay", default=None, metavar="WD",
                   help="weight decay value(s) >= 0 (default: 0; adamw: 0.01, as torch.optim.AdamW)")
    g.add_argument("--noise", default=None, metavar="SIGMA",
                   help="label noise value(s) >= 0: target a*x + c + SIGMA*eps, eps ~ N(0, 1) (default: 0)")
    g.add_argument("--init-scale", default=None, metavar="S",
                   help="init scale value(s) > 0: nn.Linear's init U[-1/sqrt(D), 1/sqrt(D)) times S (default: 1)")

    g = tr.add_argument_group("run-wide settings")
    g.add_argument("--optimizer", default="sgd", metavar="NAME",
                   help="the optimizer, as torch.optim's: sgd (--momentum, --weight-decay, --dampening, "
                   "--nesterov), adam and adamw (--weight-decay, --betas, --eps, --amsgrad), rmsprop "
                   "(--weight-decay, --alpha, --eps, --momentum, --centered) (default: sgd; SPEC.md 3b, 3c)")
    g.add_argument("--steps", type=int, default=3000, metavar="T", help="SGD steps per member (default: 3000)")
    g.add_argument("--batch-size", type=int, default=1, metavar="B", help="samples per step (default: 1)")
    g.add_argument("--dampening", type=float, default=None, metavar="TAU", help="SGD dampening in [0, 1) (default: 0)")
    g.add_argument("--nesterov", action="store_true", default=None, help="SGD: Nesterov momentum (needs momentum > 0)")
    g.add_argument("--betas", default=None, metavar="B1,B2", help="adam, adamw: beta1,beta2 in [0, 1) (default: "
                   "0.9,0.999)")
    g.add_argument("--eps", default=None, metavar="EPS", help="adam, adamw, rmsprop: eps >= 0 (default: 1e-8)")
    g.add_argument("--amsgrad", action="store_true", default=None, help="adam, adamw: the AMSGrad variant")
    g.add_argument("--alpha", default=None, metavar="ALPHA", help="rmsprop: smoothing constant in [0, 1) "
                   "(default: 0.99)")
    g.add_argument("--centered", action="store_true", default=None, help="rmsprop: the centered variant")
    g.add_argument("--problem", default="linear", metavar="NAME",
                   help="linear: the target a*x + c, one input; teacher: target-activation(a . x + c) with "
                   "--inputs D (SPEC.md 6d) (default: linear)")
    g.add_argument("--a", default=None, metavar="A",
                   help="target slope (default: 2); teacher: one value for every input or D values (1,0,0)")
    g.add_argument("--c", type=float, default=1.0, help="target intercept (default: 1)")
    g.add_argument("--inputs", type=int, default=None, metavar="D",
                   help="inputs of each neuron, nn.Linear(D, 1), 1 to 4096; D > 1 needs --problem teacher "
                   "(default: 1)")
    g.add_argument("--activation", default=None, metavar="NAME",
                   help="the neuron's activation: identity, relu, leaky_relu, sigmoid, tanh, erf, abs, square "
                   "(default: identity)")
    g.add_argument("--loss", default=None, metavar="NAME",
                   help="mse (nn.MSELoss) or bce (nn.BCEWithLogitsLoss on w . x + b: needs --problem teacher "
                   "and --activation identity) (default: mse)")
    g.add_argument("--no-bias", action="store_true", default=None,
                   help="nn.Linear(D, 1, bias=False): no b (reported as 0)")
    g.add_argument("--leaky-slope", type=float, default=None, metavar="S",
                   help="leaky_relu's negative slope (default: 0.01)")
    g.add_argument("--target-activation", default=None, metavar="NAME",
                   help="teacher: the target's activation (default: the neuron's --activation)")
    g.add_argument("--eval-samples", type=int, default=None, metavar="N",
                   help="samples of the fixed evaluation set the risk is measured on, for an activation or bce "
                   "(SPEC.md 6f) (default: 4096)")
    g.add_argument("--lo", type=float, default=1.0, help="x ~ U[lo, hi): lower end (default: 1)")
    g.add_argument("--hi", type=float, default=5.0, help="x ~ U[lo, hi): upper end (default: 5)")
    g.add_argument("--x-dist", default="uniform", choices=("uniform", "normal"),
                   help="x ~ U[lo, hi) or N(x-mean, x-std**2) (default: uniform)")
    g.add_argument("--x-mean", type=float, default=None, metavar="MU", help="--x-dist normal: mean (default: 0)")
    g.add_argument("--x-std", type=float, default=None, metavar="S", help="--x-dist normal: std > 0 (default: 1)")
    g.add_argument("--lr-schedule", default=None, metavar="SCHEDULE",
                   help="sgd: lr of step t is lr * f(t), as LambdaLR (see below; default: constant)")
    g.add_argument("--log-every", type=int, default=None, metavar="K",
                   help="keep (w, b) of every member after steps 0, K, 2K, ...")

    g = tr.add_argument_group("execution")
    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto: triton on CUDA, compile on CPU (default: auto)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    g.add_argument("--member-block", type=int, default=None, metavar="N",
                   help="train N members at a time (default: what a quarter of free memory holds)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch's intra-op threads on the CPU (default: torch's, one per core); 1 on a busy "
                   "machine, where threads wait on each other; results never depend on it")
    bar = g.add_mutually_exclusive_group()
    bar.add_argument("--quiet", action="store_true", help="no progress bar (the summary still prints)")
    bar.add_argument("--progress", action="store_true",
                     help="show the progress bar even when stderr is not a terminal (default: only on a terminal, "
                     "for runs longer than about 2 s)")
    g.add_argument("--distributed", action="store_true",
                   help="under torchrun: shard the members across the processes (one per GPU); rank 0 prints "
                   "the summary and writes --out, rank r checkpoints to PATH.rank{r}")

    g = tr.add_argument_group("files")
    g.add_argument("--out", metavar="PATH", help="save the result (.npz, read it with fastneuron.load); a "
                   "directory (DIR/) gets one part per rank as the run goes, and its checkpoints")
    g.add_argument("--checkpoint", metavar="PATH", help="save the state to PATH as the run goes, atomically")
    g.add_argument("--checkpoint-every", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between checkpoints (default: 5)")
    g.add_argument("--resume", metavar="PATH", help="continue the run that wrote the checkpoint PATH")
    return top


def _check_writable(option: str, path: str) -> None:
    """Before the run: a file can be written at ``path`` (not a directory, FIFO or device)."""
    try:
        check_writable(option, path)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


# -- train ---------------------------------------------------------------------


def _n_logged(steps, log_every) -> int:
    """len(range(0, steps, log_every)) without building or overflowing (0 when either is
    not a valid value: train refuses those)."""
    from ._validate import INT_MAX

    if not isinstance(steps, int) or not isinstance(log_every, int) or not 0 < steps <= INT_MAX or log_every < 1:
        return 0
    return -(-steps // log_every)


#: The optimizers' flags besides --lrs and --weight-decay: flag -> (its argument, the optimizers
#: that take it). A flag given to another optimizer is refused, naming both.
_OPTIMIZER_FLAGS = {
    "--momentum": ("momentum", ("sgd", "rmsprop")),
    "--dampening": ("dampening", ("sgd",)),
    "--nesterov": ("nesterov", ("sgd",)),
    "--betas": ("betas", ("adam", "adamw")),
    "--eps": ("eps", ("adam", "adamw", "rmsprop")),
    "--amsgrad": ("amsgrad", ("adam", "adamw")),
    "--alpha": ("alpha", ("rmsprop",)),
    "--centered": ("centered", ("rmsprop",)),
}
_OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "rmsprop")


def _optimizer_options(args) -> dict:
    """The optimizer's options given on the command line, as train() takes them (SGD's
    momentum is left out: it is an axis of the product)."""
    options = {}
    for flag, (name, takers) in _OPTIMIZER_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if args.optimizer in _OPTIMIZER_NAMES and args.optimizer not in takers:
            raise CLIError(f"{flag} is an option of {' and '.join(takers)}, not of --optimizer {args.optimizer}")
        if name == "momentum":
            if args.optimizer == "rmsprop":  # run-wide for RMSprop
                options[name] = parse_one_float(value, flag)
        elif name == "betas":
            options[name] = parse_betas(value, flag)
        elif name in ("eps", "alpha"):
            options[name] = parse_one_float(value, flag)
        else:
            options[name] = value
    return options


#: The model's and the teacher's run-wide flags: flag -> its argument; each passed to train() only
#: when given (a run without them is v2's, and records what it did).
_MODEL_FLAGS = {"--inputs": "inputs", "--activation": "activation", "--loss": "loss", "--leaky-slope": "leaky_slope",
                "--target-activation": "target_activation", "--eval-samples": "eval_samples"}


def _model_options(args) -> dict:
    """The model's run-wide options (and the teacher's target activation, the risk's
    evaluation set) given on the command line (``--init-scale``, an axis of the product,
    is added by the caller)."""
    options = {name: getattr(args, name) for name in _MODEL_FLAGS.values() if getattr(args, name) is not None}
    if args.no_bias:
        options["bias"] = False
    return options


def _problem_options(args) -> dict:
    """The problem's run-wide options given on the command line (``--noise``, an axis of
    the product, is added by the caller)."""
    options = dict(c=args.c, lo=args.lo, hi=args.hi, x_dist=args.x_dist)
    if args.a is not None:  # one value, or one per input (the teacher's)
        a = parse_floats(args.a, "--a")
        options["a"] = float(a[0]) if a.size == 1 else [float(v) for v in a]
    else:
        options["a"] = 2.0
    for flag, name in (("--x-mean", "x_mean"), ("--x-std", "x_std")):
        value = getattr(args, name)
        if value is not None:
            if args.x_dist != "normal":
                raise CLIError(f"{flag} is an option of --x-dist normal")
            options[name] = value
    return options


def _train(args) -> int:
    if args.distributed:
        # A lost store makes c10d log a warning with C++ stack frames before fastneuron's
        # one line says so; torch reads the level once, when it loads (just below).
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    from . import progress
    from .engine import check_host_memory

    # Count the members before anything of their size is built: a run that cannot fit
    # in memory is refused here, in a moment, not after minutes of building inputs.
    seeds = parse_seeds(args.seeds)
    options = _optimizer_options(args)  # the optimizer's run-wide options; refuses flags of another optimizer
    member_momentum = args.optimizer == "sgd"  # momentum is an axis of the product for SGD only
    momentum_text = (args.momentum if args.momentum is not None else "0") if member_momentum else "0"
    wd_text = args.weight_decay if args.weight_decay is not None else "0"
    noise_text = args.noise if args.noise is not None else "0"
    scale_text = args.init_scale if args.init_scale is not None else "1"
    counts = [len(seeds), count_floats(args.lrs, "--lrs"), count_floats(momentum_text, "--momentum"),
              count_floats(wd_text, "--weight-decay"), count_floats(noise_text, "--noise"),
              count_floats(scale_text, "--init-scale")]
    problem = {"problem": args.problem, **_problem_options(args), **_model_options(args)}
    m = math.prod(counts)
    if args.resume is not None and args.out is None and _is_parts_dir(args.resume):
        args.out = args.resume  # resuming a parts directory: the run goes on writing there
    out_dir = args.out if args.out is not None and is_directory_path(args.out) else None
    if out_dir is None:  # the members are described (a grid); the results are not, unless they go to a directory
        check_host_memory(m, _n_logged(args.steps, args.log_every))

    checkpoint = args.checkpoint if args.checkpoint is not None else (args.resume if out_dir is None else None)
    for option, path in (("--out", None if out_dir else args.out),
                         ("--checkpoint" if args.checkpoint is not None else "--resume", checkpoint)):
        if path is not None and not (option == "--out" and args.distributed and os.environ.get("RANK", "0") != "0"):
            _check_writable(option, path)

    lrs = parse_floats(args.lrs, "--lrs")
    mus = parse_floats(momentum_text, "--momentum")
    wds = parse_floats(wd_text, "--weight-decay")
    noises = parse_floats(noise_text, "--noise")
    scales = parse_floats(scale_text, "--init-scale")

    # The product seeds x lrs x momentum x weight decay x noise x init scale, described
    # (fastneuron.grid): each member's values are expanded on the device, block by block,
    # never as arrays of M.
    import fastneuron

    seed_axis = seeds.ranges[0] if len(seeds.ranges) == 1 else seeds.materialize()
    # (init_scale only when given: a run without it describes its members as before)
    grid = fastneuron.grid(seed_axis, lrs, momentum=mus, weight_decay=wds, noise=noises,
                           **({} if args.init_scale is None else {"init_scale": scales}))
    if member_momentum:
        options["momentum"] = grid["momentum"]
    if args.weight_decay is not None or args.optimizer != "adamw":  # adamw: torch's default 0.01 when not given
        options["weight_decay"] = grid["weight_decay"]
    problem["noise"] = grid["noise"]
    if args.init_scale is not None:
        problem["init_scale"] = grid["init_scale"]

    done_before = 0
    if args.resume and out_dir is None:
        done_before = _steps_done(args.resume, m, args.steps)
        if args.distributed:  # one checkpoint per rank (those this machine sees)
            done_before = sum(_steps_done(p, m, args.steps) for p in glob.glob(glob.escape(args.resume) + ".rank*"))
    import fastneuron

    t0 = time.perf_counter()
    # The checks cast to float32: an input like --c 1e40 is refused with one line,
    # not preceded by numpy's overflow warning.
    with np.errstate(over="ignore", invalid="ignore"), _names_path(checkpoint):
        result = fastneuron.train(
            grid["seeds"], grid["lrs"], args.steps, optimizer=args.optimizer, batch_size=args.batch_size,
            log_every=args.log_every, backend=args.backend, device=args.device,
            **options, **problem, lr_schedule=args.lr_schedule,
            progress=False if args.quiet else (True if args.progress else None),  # None: on a terminal only
            checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
            resume=args.resume, member_block=args.member_block, distributed=args.distributed, out=out_dir,
            threads=args.threads,
        )
    seconds = time.perf_counter() - t0
    timing = progress.last_run_timing()
    if timing is not None and timing.first_chunk_end is not None:
        timing.start_up_s = timing.first_chunk_end - t0  # from the CLI's call: the checks count too
    if result is None:  # a rank other than 0 of a distributed run
        return 0
    if args.out is not None and out_dir is None:
        with _names_path(args.out):
            result.save(args.out)
    print(summary(result, counts, seconds, done_before=done_before if args.resume else None, out=args.out,
                  timing=timing))
    return 0


def _is_parts_dir(path: str) -> bool:
    """A directory a run with ``--out DIR/`` wrote (its parts, or their manifest)."""
    return os.path.isdir(path) and any(n == "manifest.json" or n.startswith("part-") for n in os.listdir(path))


@contextlib.contextmanager
def _names_path(path):
    """An OSError without a file name (a failed write() says only "[Errno 28] No space
    left on device") gets ``path``, the file being written, so the message can name it."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and path is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise


def _steps_done(path: str, m: int, steps: int) -> int:
    """Neuron-steps a checkpoint already holds (0 when it cannot be read: train says why)."""
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
        b0, b1, t = (int(meta[k]) for k in ("block_start", "block_stop", "step"))
    except Exception:  # any unreadable file: train() reports it properly
        return 0
    return min(m * steps, b0 * steps + (b1 - b0) * t)


#: Above this many members of a parts directory, the CLI's medians (which read whole
#: columns) are left to the streaming summary.
_MEDIAN_MEMBERS = 1 << 26


def summary(result, shape, seconds: float, *, done_before: Optional[int] = None, out: Optional[str] = None,
            timing=None) -> str:
    """The lines printed after a run (``done_before``: neuron-steps a resumed checkpoint held).

    ``seconds``: the whole call of ``fastneuron.train``. With ``timing`` (the run's
    :class:`fastneuron.progress.RunTiming`), the time to the end of the first chunk of
    steps (checks, compilation, first allocations) is printed apart as "start-up", and
    "seconds" and "neuron-steps/s" are those of the rest of the run; without it (or when
    no chunk ran) "start-up" is the whole call."""
    s = result.settings
    m = len(result)
    names = ("seeds", "lrs", "momenta", "weight decays", "noise levels", "init scales")
    factors = " x ".join(f"{n} {k}" for n, k in zip(shape, names) if n > 1 or k == "seeds")
    if hasattr(result, "iter_parts") and m > _MEDIAN_MEMBERS:  # a parts directory too large to read whole
        diverged = sum(int((part.diverged_at >= 0).sum()) for _, part in result.iter_parts())
        ok = None
    else:
        diverged = int((result.diverged_at >= 0).sum())
        ok = (result.diverged_at < 0).numpy()

    def median(x) -> str:
        if ok is None:
            return f"n/a ({m} members: fastneuron.load(DIR).summary() streams the quantiles)"
        return f"{float(np.median(x.numpy()[ok])):.9g}" if ok.any() else "n/a (every member diverged)"

    resumed = done_before is not None
    work = m * s["steps"] - (done_before or 0)
    if timing is not None and timing.start_up_s is not None and timing.neuron_steps > 0:
        # The part of the work after the first chunk (this process's share of it, scaled
        # to the whole run: the same fraction on every rank of a distributed run).
        rest_work = work * (1 - timing.first_chunk_neuron_steps / timing.neuron_steps)
        start_up = min(seconds, timing.start_up_s)
        rest_s = seconds - start_up
    else:
        rest_work, rest_s, start_up = 0, 0.0, seconds
    rate = f"{rest_work / rest_s:.4g}" if rest_work > 0 and rest_s > 0 else "n/a (a single chunk of steps)"
    lines = [
        f"members        {m} ({factors})",
        f"steps          {s['steps']} (batch size {s['batch_size']})",
        f"backend        {s['backend']} on {s['device']}" + (f" ({s['world_size']} ranks)" if "world_size" in s
                                                             else ""),
        f"start-up       {start_up:.3f} s (checks, compilation and the first chunk of steps)",
        f"seconds        {rest_s:.3f}" + (f" (resumed: {100.0 * (done_before or 0) / max(1, m * s['steps']):.3g}%"
                                              " of the run was done before)" if resumed else ""),
        f"neuron-steps/s {rate}" + (" (the steps of this process)" if resumed else ""),
        f"diverged       {diverged} ({100.0 * diverged / m:.3g}%)",
        *_weight_lines(result, s, ok, median),
        f"median risk    {median(None if ok is None else result.risk)}",
    ]
    if out is not None:
        lines.append(f"saved          {out}")
    return "\n".join(lines)


def _weight_lines(result, s: dict, ok, median) -> list:
    """The summary's lines of the final weight and bias: the median w (one input) or |w|
    (d > 1: its norm, beside the teacher's |a|), and b (or that there is none)."""
    d = s.get("inputs", 1)
    if d == 1:
        lines = [f"median weight  {median(None if ok is None else result.weight)}   (target a = {s['a']:g})"]
    else:
        a = np.broadcast_to(np.asarray(s["a"], dtype=np.float64), (d,))
        norm = None if ok is None else result.weight.double().norm(dim=1)
        lines = [f"median |w|     {median(norm)}   ({d} inputs; teacher |a| = {float(np.linalg.norm(a)):.6g})"]
    if s.get("bias", True):
        lines.append(f"median bias    {median(None if ok is None else result.bias)}   (target c = {s['c']:g})")
    else:
        lines.append("bias           none (--no-bias)")
    return lines


def _run_bench(argv: list) -> int:
    bench_main = importlib.import_module("fastneuron.bench").main
    try:
        takes_args = bool(inspect.signature(bench_main).parameters)
    except (TypeError, ValueError):
        takes_args = True
    if takes_args:
        rc = bench_main(argv)
    else:
        saved, sys.argv = sys.argv, [f"{PROG} bench", *argv]
        try:
            rc = bench_main()
        finally:
            sys.argv = saved
    return int(rc or 0)


#: The Python API's argument names, as the flags that set them, for error messages.
_FLAGS = {"seeds": "--seeds", "lrs": "--lrs", "steps": "--steps", "batch_size": "--batch-size",
          "log_every": "--log-every", "momentum": "--momentum", "weight_decay": "--weight-decay",
          "dampening": "--dampening", "nesterov": "--nesterov", "a": "--a", "c": "--c", "lo": "--lo", "hi": "--hi",
          "backend": "--backend", "device": "--device", "member_block": "--member-block", "threads": "--threads",
          "checkpoint": "--checkpoint", "checkpoint_every": "--checkpoint-every", "resume": "--resume",
          "optimizer": "--optimizer", "betas": "--betas", "eps": "--eps", "amsgrad": "--amsgrad", "alpha": "--alpha",
          "centered": "--centered", "noise": "--noise", "x_dist": "--x-dist", "x_mean": "--x-mean",
          "x_std": "--x-std", "lr_schedule": "--lr-schedule", "problem": "--problem", "inputs": "--inputs",
          "activation": "--activation", "loss": "--loss", "init_scale": "--init-scale",
          "leaky_slope": "--leaky-slope", "target_activation": "--target-activation",
          "eval_samples": "--eval-samples"}


def flag_names(message: str) -> str:
    """A message of the Python API with its argument names as the CLI's flags:
    ``log_every must be >= 1`` -> ``--log-every must be >= 1``, ``nesterov=True`` ->
    ``--nesterov``. Names with an underscore are replaced anywhere; plain words
    (``steps``, ``a``) only as the message's subject, where they can only be the argument."""
    import re

    message = message.replace("nesterov=True", "--nesterov").replace('out="DIR/"', "--out DIR/")
    # "needs problem='teacher'", "inputs=3", "activation='relu'": the flags with their values.
    message = re.sub(r"(?<![\w-])(problem|inputs|activation|loss|target_activation)=(?:'([^']*)'|(\w+))",
                     lambda mt: f"{_FLAGS[mt.group(1)]} {mt.group(2) if mt.group(2) is not None else mt.group(3)}",
                     message)
    message = re.sub(r"\bbetas\[([01])\]", lambda mt: f"--betas item {int(mt.group(1)) + 1}", message)
    message = re.sub(r"(?<![\w-])(\w+_\w+)(?![\w-])", lambda mt: _FLAGS.get(mt.group(1), mt.group(1)), message)
    first = re.match(r"(\w+)(?=[ :=])", message)
    if first and first.group(1) in _FLAGS and not message.startswith(first.group(1) + " ="):
        message = _FLAGS[first.group(1)] + message[first.end():]
    # "lo must be < hi (...), got lo=5.0, hi=1.0"
    return re.sub(r"\b(lo|hi)=", lambda mt: f"--{mt.group(1)} ", message) if message.startswith("--lo ") else message


def error_message(exc: BaseException) -> str:
    """The one line printed for a refused command line (without the ``fastneuron: error:``)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError):
        # "[Errno 28] No space left on device" says nothing of which file: name it.
        if exc.filename is not None:
            message = f"{exc.filename}: {exc.strerror or message}"
            if exc.filename2 is not None:
                message += f" (and {exc.filename2})"
        return message
    if isinstance(exc, CLIError):
        return message
    return flag_names(message)


def _say(line: str) -> None:
    # One write per line: the ranks of a distributed run share torchrun's stderr, and under
    # PYTHONUNBUFFERED print's two writes (text, then newline) let two ranks' lines run together.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def namespace_clone() -> Optional[str]:
    """Why ``import fastneuron`` gave no package, or None when it gave one.

    Python run from the parent of a clone named ``fastneuron`` (``python -m fastneuron``
    there puts that directory first on sys.path) imports the clone itself, which has no
    ``__init__.py``, as a namespace package with nothing in it: not the package in its
    ``fastneuron/`` folder. Under an editable install this module is still found (the
    install's finder maps ``fastneuron.__main__``), but ``fastneuron.train`` is not."""
    pkg = sys.modules.get("fastneuron")
    if pkg is None or getattr(pkg, "__file__", None) is not None:
        return None
    dirs = [str(d) for d in getattr(pkg, "__path__", ())]
    clones = [d for d in dirs if os.path.isfile(os.path.join(d, "fastneuron", "__init__.py"))]
    where = (clones or dirs or ["?"])[0]
    what = "a clone of the repository, whose package is its fastneuron/ folder" if clones else "no __init__.py"
    return (f"'import fastneuron' found the directory {where} ({what}) and imported it as an empty namespace "
            f"package, since {os.path.dirname(where) or '.'} comes first on sys.path (python -m puts the current "
            f"directory there): run from another directory, or from inside the clone, or give the clone another name")


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    shadowed = namespace_clone()
    if shadowed is not None:
        _say(f"{PROG}: error: {shadowed}")
        return 2
    has_bench = _has_bench()
    if argv[:1] == ["bench"] and has_bench:
        return _run_bench(argv[1:])
    try:
        args = build_parser(with_bench=has_bench).parse_args(argv)
        if args.command == "train":
            return _train(args)
        raise CLIError(f"unknown command {args.command!r}")
    except (ValueError, OSError) as exc:  # CLIError, and every refusal of the Python API
        _say(f"{PROG}: error: {error_message(exc)}")
        return 2
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return 130
    except RuntimeError as exc:
        from .distributed import DistributedError

        if not isinstance(exc, DistributedError):
            raise
        _say(f"{PROG}: error: {str(exc).removeprefix(PROG + ': ')}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

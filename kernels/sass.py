"""Instruction budget of the Triton kernels for an H200, measured without a GPU.

Two kernels (:data:`KERNELS`): ``triton_sgd.sgd_kernel`` (its option sets in
:data:`VARIANTS`) and ``triton_adam.adam_kernel`` (Adam, AdamW, RMSprop; :data:`ADAM_VARIANTS`),
each compiled from its module's source after ``triton_common.py``'s (the shared Philox,
sampling and history helpers). What follows says it for the SGD kernel; the Adam kernel is
compiled and analyzed the same way, with one more figure: the float64 fmas (DFMA) of its
exact ``lr / bc1`` are counted apart. In both kernels the FFMAs of IEEE square roots
(``tl.math.sqrt_rn``: Adam's and RMSprop's updates, and the Box–Muller normals of NOISE and
NORMAL, SPEC §2b, which also divide with ``tl.math.div_rn``) count with division's
(MUFU.RSQ's radicand and result). ``fast_path_instructions_per_neuron_step``
leaves out the call blocks of division's and square root's slow paths (argument moves,
CALL, jump back), which run only for zero, denormal, inf, NaN or extreme operands.

``python -m fastneuron.kernels.sass [--json PATH]`` compiles ``triton_sgd.sgd_kernel``
ahead of time for ``GPUTarget("cuda", 90, 32)`` (Triton builds sm_90a) with what
``triton_sgd._launch`` passes: BLOCK = ``launch_block_size(**constexprs)`` (BLOCK_SIZE,
or BOX_MULLER_BLOCK_SIZE with NOISE or NORMAL), num_warps = NUM_WARPS, GROUP =
4 // gcd(B, 4), UNROLL = GROUP*B <= MAX_UNROLLED_SAMPLES, enable_fp_fusion =
ENABLE_FP_FUSION, maxnreg = MAX_REGISTERS (ptxas .maxnreg; none where the module has no
such constant), and the CUDA path of its Philox (PTX_PHILOX: the interpreter off), with
the argument types and 16-byte alignment the JIT specializes on
for CUDA tensors and a member count divisible by 16. It disassembles the cubin with the
``nvdisasm`` in Triton's wheel and reports, for each option set in :data:`VARIANTS`:

- the main loop, the largest outermost loop (a backward branch): for an unrolled kernel
  the loop over groups of GROUP steps. Its static instruction count over the
  neuron-steps a thread does per iteration (GROUP * BLOCK / (32*num_warps)) is the SASS
  instructions per neuron-step, also by opcode. Its FSETPs against FLT_MAX (SPEC §4's
  check, two per neuron-step) confirm the loop and the divisor;
- registers and spills (``cuobjdump -res-usage``: REG, and LOCAL bytes / 4 as the
  driver's ``n_spills``) and the blocks per SM that the registers allow;
- FFMAs: SPEC §3 forbids contracting w*x + b, so none may appear but in IEEE division
  (``tl.math.div_rn``: the batch mean when BATCH > 1, the normals' log) and square root
  (``tl.math.sqrt_rn``: the normals' radius): the FFMAs of a called subroutine (the slow
  path) or reading the divisor or its reciprocal, the radicand or its reciprocal square
  root (the fast path's Newton steps) count apart;
- local-memory accesses (LDL/STL) in the loop;
- the issue-bound estimate: 132 SMs x 4 schedulers x 32 lanes x 1.98e9 Hz / instructions
  per neuron-step (41.5 -> about 8.06e11 neuron-steps/s).

Static counts are an issue budget, not a timing: they ignore latency, and a branch taken
rarely (a logged step's store) counts as if always taken.

The kernel is built afresh from ``triton_sgd.py``'s source (its triton imports, constants
and ``@triton.jit`` functions): no torch or CUDA driver needed. Where triton was imported
under ``TRITON_INTERPRET=1`` (the tests) its own library (``tl.philox``) is interpreted
and cannot compile, so the compiles run in child processes without it, one per core.
"""

from __future__ import annotations

import __future__
import argparse
import ast
import collections
import contextlib
import datetime
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNEL_SOURCE = Path(__file__).with_name("triton_sgd.py")
ADAM_SOURCE = Path(__file__).with_name("triton_adam.py")
COMMON_SOURCE = Path(__file__).with_name("triton_common.py")  # the helpers both kernels call
NORMAL_SOURCE = Path(__file__).with_name("triton_normal.py")  # the normals triton_common calls
MATH_SOURCE = Path(__file__).with_name("triton_math.py")  # exp32, tanh32, erf32 (SPEC §2c)
NEURON_SOURCE = Path(__file__).with_name("triton_neuron.py")  # SPEC §6's neuron (d inputs, activations)
TARGET = ("cuda", 90, 32)
SMS, SCHEDULERS, LANES, CLOCK_HZ = 132, 4, 32, 1.98e9  # H200 (SXM)
REGS_PER_SM, MAX_THREADS_PER_SM, MAX_BLOCKS_PER_SM = 65536, 2048, 32
FLT_MAX_SASS = "3.40282346638528859812e+38"

#: Option sets, as the launcher's constexprs (those not named are False; BATCH defaults to 1).
VARIANTS = {
    "base": {},
    "momentum": {"MOMENTUM": True},
    "nesterov": {"MOMENTUM": True, "NESTEROV": True},
    "weight_decay": {"WEIGHT_DECAY": True},
    "history": {"HISTORY": True},
    "all+history": {"WEIGHT_DECAY": True, "MOMENTUM": True, "NESTEROV": True, "HISTORY": True},
    "batch3": {"BATCH": 3},
    "batch3 all+history": {"BATCH": 3, "WEIGHT_DECAY": True, "MOMENTUM": True, "NESTEROV": True,
                           "HISTORY": True},
    "init": {"INIT": True},  # TritonStepper.init: a launch with nsteps = 0
    # SPEC §2b, §3d: label noise, Gaussian x, the lr schedule.
    "noise": {"NOISE": True},
    "normal": {"NORMAL": True},
    "normal+noise": {"NORMAL": True, "NOISE": True},
    "schedule": {"SCHEDULE": True},
    "noise+schedule momentum": {"NOISE": True, "SCHEDULE": True, "MOMENTUM": True},
}

#: The Adam kernel's option sets (``triton_adam.adam_kernel``; OPTIMIZER 0 Adam, 1 AdamW,
#: 2 RMSprop; those not named as in ``launch_constexprs``). "adam" is the issue's base:
#: Adam, batch 1, default betas (LERP_SMALL), no weight decay, no amsgrad.
ADAM_VARIANTS = {
    "adam": {},
    "adam amsgrad": {"AMSGRAD": True},
    "adam weight_decay": {"WEIGHT_DECAY": True},
    "adam lerp_big": {"LERP_SMALL": False},
    "adam all+history": {"WEIGHT_DECAY": True, "AMSGRAD": True, "HISTORY": True},
    "adam batch3": {"BATCH": 3},
    "adam batch3 all+history": {"BATCH": 3, "WEIGHT_DECAY": True, "AMSGRAD": True, "HISTORY": True},
    "adamw": {"OPTIMIZER": 1, "WEIGHT_DECAY": True},
    "adamw amsgrad+history": {"OPTIMIZER": 1, "WEIGHT_DECAY": True, "AMSGRAD": True, "HISTORY": True},
    "rmsprop": {"OPTIMIZER": 2},
    "rmsprop all+history": {"OPTIMIZER": 2, "WEIGHT_DECAY": True, "CENTERED": True, "MOMENTUM": True,
                            "HISTORY": True},
    "rmsprop batch3 all": {"OPTIMIZER": 2, "BATCH": 3, "WEIGHT_DECAY": True, "CENTERED": True, "MOMENTUM": True},
    "adam noise": {"NOISE": True},
    "adam normal+noise": {"NORMAL": True, "NOISE": True},
}


#: SPEC §6's kernels (``triton_neuron``): the teacher problem (scalar a), identity activation,
#: mse, bias, SGD, batch 1 (unless named), uniform or Gaussian x, for d = 1, 8, 32, 64
#: (``neuron_kernel``, the weight in registers) and 128, 1024, 4096 (``neuron_chunked_kernel``,
#: chunks of CHUNK coordinates; Adam at d = 64 too). D and the state slots (USED) pick the
#: coordinate constexprs (``triton_neuron.layout``). The "normal" variants differ
#: from their uniform twin by x's draw only: their difference per parameter-step is the cost
#: of one normal (``format_report`` names it).
NEURON_VARIANTS = {
    "neuron d1": {"D": 1},
    "neuron d1 normal": {"D": 1, "NORMAL": True},
    "neuron d8": {"D": 8},
    "neuron d8 normal": {"D": 8, "NORMAL": True},
    "neuron d32": {"D": 32},
    "neuron d64": {"D": 64},
    "neuron d64 normal": {"D": 64, "NORMAL": True},
    "neuron d8 tanh": {"D": 8, "ACT": 4, "TACT": 4},
    "neuron d8 bce": {"D": 8, "BCE": True},
    "neuron d8 adam": {"D": 8, "OPTIMIZER": 0, "USED": 3 + 8},
    "neuron d32 adam": {"D": 32, "OPTIMIZER": 0, "USED": 3 + 8},
    "neuron d8 batch3 momentum": {"D": 8, "BATCH": 3, "MOMENTUM": True, "USED": 1 + 8},
    "neuron d64 momentum": {"D": 64, "MOMENTUM": True, "USED": 1 + 8},
}
NEURON_CHUNKED_VARIANTS = {
    "neuron d64 adam": {"D": 64, "OPTIMIZER": 0, "USED": 3 + 8},
    "neuron d128": {"D": 128},
    "neuron d1024": {"D": 1024},
    "neuron d1024 normal": {"D": 1024, "NORMAL": True},
    "neuron d4096 adam": {"D": 4096, "OPTIMIZER": 0, "USED": 3 + 8},
}


@dataclass(frozen=True)
class KernelInfo:
    """A kernel the report compiles: its module's source, its ``@triton.jit`` function,
    the pointer arguments that are not ``*fp32``, its option constexprs with the values
    its launcher passes when an option is off, and its variants."""

    source: Path
    function: str
    pointers: dict
    options: dict
    variants: dict
    sources: tuple = ()  # sources run before ``source`` (after triton_normal's and triton_common's)
    #: The module's names of its launch settings: warps, fusion, .maxnreg (None: none), BLOCK,
    #: the unrolled-sample limit and the BLOCK rule (a function of the constexprs).
    names: tuple = ("NUM_WARPS", "ENABLE_FP_FUSION", "MAX_REGISTERS", "BLOCK_SIZE", "MAX_UNROLLED_SAMPLES",
                    "launch_block_size")
    per_parameter: bool = False  # SPEC §6's kernels: counts per parameter-step (d per neuron-step)


KERNELS = {
    "sgd": KernelInfo(KERNEL_SOURCE, "sgd_kernel",
                      {"s_lo_ptr": "*i32", "s_hi_ptr": "*i32", "div_ptr": "*i64", "fac_ptr": "*fp64",
                       "neg_lr64_ptr": "*fp64"},
                      dict(INIT=False, WEIGHT_DECAY=False, MOMENTUM=False, NESTEROV=False, HISTORY=False, NOISE=False,
                           NORMAL=False, SCHEDULE=False), VARIANTS),
    "adam": KernelInfo(ADAM_SOURCE, "adam_kernel",
                       {"s_lo_ptr": "*i32", "s_hi_ptr": "*i32", "div_ptr": "*i64", "tab_ptr": "*fp64",
                        "neg_lr64_ptr": "*fp64"},
                       dict(OPTIMIZER=0, WEIGHT_DECAY=False, AMSGRAD=False, LERP_SMALL=True, CENTERED=False,
                            MOMENTUM=False, HISTORY=False, NOISE=False, NORMAL=False), ADAM_VARIANTS),
}
_NEURON_POINTERS = {"s_lo_ptr": "*i32", "s_hi_ptr": "*i32", "div_ptr": "*i64", "tab_ptr": "*fp64",
                    "neg_lr64_ptr": "*fp64", "fac_ptr": "*fp64"}
_NEURON_OPTIONS = dict(D=1, OPTIMIZER=3, WEIGHT_DECAY=False, MOMENTUM=False, NESTEROV=False, AMSGRAD=False,
                       LERP_SMALL=True, CENTERED=False, SCHEDULE=False, BIAS=True, ACT=0, TACT=0, BCE=False,
                       A_VEC=False, HISTORY=False, NOISE=False, NORMAL=False, USED=0)
_NEURON_NAMES = ("NEURON_NUM_WARPS", "NEURON_ENABLE_FP_FUSION", None, None, "NEURON_MAX_UNROLLED_SAMPLES",
                 "neuron_block_size")
_NEURON_SOURCES = (MATH_SOURCE, KERNEL_SOURCE, ADAM_SOURCE)  # exp32..., SGD's _sgd, Adam's _adam and _rmsprop
KERNELS["neuron"] = KernelInfo(NEURON_SOURCE, "neuron_kernel", _NEURON_POINTERS, _NEURON_OPTIONS, NEURON_VARIANTS,
                               _NEURON_SOURCES, _NEURON_NAMES, True)
KERNELS["neuron_chunked"] = KernelInfo(NEURON_SOURCE, "neuron_chunked_kernel", _NEURON_POINTERS, _NEURON_OPTIONS,
                                       NEURON_CHUNKED_VARIANTS, _NEURON_SOURCES, _NEURON_NAMES, True)


def _tool(name: str) -> Path:
    import triton
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def tools_available() -> bool:
    """Whether triton and its nvidia tools (ptxas, cuobjdump, nvdisasm) are installed."""
    try:
        return all(os.access(_tool(t), os.X_OK) for t in ("ptxas", "cuobjdump", "nvdisasm"))
    except ImportError:
        return False


@contextlib.contextmanager
def _no_interpreter():
    """TRITON_INTERPRET off for ``triton.jit`` and ``triton.compile``, restored after."""
    from triton import knobs  # triton >= 3.4
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with knobs.runtime.scope():
            knobs.runtime.interpret = False
            yield
    finally:
        os.environ.pop("TRITON_INTERPRET", None)
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


#: Plain functions of a kernel module that the report runs as its launcher does (they
#: use the module's constants only): ``launch_block_size(**constexprs)``, the BLOCK
#: ``_launch`` passes on a GPU (triton_sgd.py; without it, the module's BLOCK_SIZE).
LAUNCH_RULES = ("launch_block_size", "neuron_block_size", "layout", "_pow2_at_least")


def _kept_statements(path: Path) -> list:
    """The statements of ``path`` that build a kernel: its triton/math imports, its
    constants, its ``@triton.jit`` functions and its :data:`LAUNCH_RULES` (nothing that
    needs torch or the package)."""
    def wanted(node) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            return all(n.split(".")[0] in ("__future__", "triton", "math") for n in names)
        return isinstance(node, (ast.Assign, ast.AnnAssign)) or (
            isinstance(node, ast.FunctionDef) and (node.name in LAUNCH_RULES
                                                   or any("jit" in ast.unparse(d) for d in node.decorator_list)))

    return [node for node in ast.parse(path.read_text(), str(path)).body if wanted(node)]


@functools.lru_cache(maxsize=None)
def kernel_namespace(kernel: str = "sgd") -> dict:
    """The kernel module's source (``triton_sgd.py`` or ``triton_adam.py``, see
    :data:`KERNELS`) after ``triton_common.py``'s: their triton imports, constants and
    ``@triton.jit`` functions, run with the interpreter off (the modules themselves may be
    interpreted, or not importable without torch). Statements that need anything else
    (torch, the package) are skipped; the shared helpers the kernel module imports from
    ``triton_common`` are defined by running that module's source first, in the same
    namespace."""
    import triton

    info = KERNELS[kernel]
    ns = {"__name__": f"fastneuron.kernels._{info.source.stem}_aot", "__file__": str(info.source)}
    with _no_interpreter():
        for path in (NORMAL_SOURCE, COMMON_SOURCE, *info.sources, info.source):
            keep = _kept_statements(path)
            flags = sum(getattr(__future__, a.name).compiler_flag for node in keep
                        if isinstance(node, ast.ImportFrom) and node.module == "__future__" for a in node.names)
            for node in keep:  # one at a time, so that a constant that needs torch is skipped
                code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec",
                               flags=flags, dont_inherit=True)
                try:
                    exec(code, ns)
                except NameError:
                    pass
    if not isinstance(ns.get(info.function), triton.runtime.JITFunction):
        raise RuntimeError(f"no @triton.jit {info.function} in {info.source}")
    return ns


def launch_constexprs(BATCH: int = 1, kernel: str = "sgd", **flags) -> dict:
    """The constexprs ``_launch`` passes for batch size BATCH and the given option flags
    (of ``kernel``, a key of :data:`KERNELS`)."""
    ns = kernel_namespace(kernel)
    info = KERNELS[kernel]
    _, _, _, block_name, unrolled_name, rule_name = info.names
    group = 4 // math.gcd(BATCH, 4)
    out = dict(BLOCK=ns[block_name] if block_name else 1, BATCH=BATCH, GROUP=group,
               UNROLL=group * BATCH <= ns[unrolled_name], **info.options)
    if set(flags) - set(out):
        raise ValueError(f"unknown constexprs {sorted(set(flags) - set(out))}")
    out.update(flags)
    if info.per_parameter:  # SPEC §6's kernels: the coordinate constexprs of d = D (triton_neuron.layout)
        lay = ns["layout"](out["D"], bin(out["USED"] & 7).count("1"))
        if lay.pop("chunked") != (info.function == "neuron_chunked_kernel"):
            raise ValueError(f"D={out['D']} does not run {info.function}")
        out.update(lay)
    if rule_name in ns and "BLOCK" not in flags:  # the launcher's rule (triton_sgd, triton_neuron)
        out["BLOCK"] = ns[rule_name](**out)
    return out


@dataclass(frozen=True)
class CompiledVariant:
    constexprs: dict
    num_warps: int
    enable_fp_fusion: bool
    sass: str
    n_regs: int
    n_spills: int  # LOCAL bytes / 4, as the CUDA driver reports to triton
    stack: int
    triton_version: str
    kernel: str = "sgd"


def _compile(items: tuple, fusion: bool, kernel: str = "sgd") -> CompiledVariant:
    import triton
    from triton.backends.compiler import GPUTarget
    ns = kernel_namespace(kernel)
    fn = ns[KERNELS[kernel].function]
    constexprs = dict(items)
    ptrs = KERNELS[kernel].pointers
    sig = {n: "constexpr" if n in constexprs else ptrs.get(n, "*fp32") if n.endswith("_ptr") else "i32"
           for n in fn.arg_names}
    # Torch's allocations are 16-byte aligned; t0, nsteps and log_every are do_not_specialize.
    # (SPEC §6's kernels do not specialize on n_members: see triton_neuron.neuron_kernel.)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if n.endswith("_ptr") or (n == "n_members" and not KERNELS[kernel].per_parameter)}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    warps_name, _, maxnreg_name = KERNELS[kernel].names[:3]
    opts = {"num_warps": ns[warps_name], "enable_fp_fusion": fusion,
            "maxnreg": ns.get(maxnreg_name) if maxnreg_name else None}
    with _no_interpreter():
        compiled = triton.compile(src, target=GPUTarget(*TARGET), options=opts)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([str(_tool("nvdisasm")), "-c", str(cubin)], check=True,
                              capture_output=True, text=True).stdout
        res = subprocess.run([str(_tool("cuobjdump")), "-res-usage", str(cubin)], check=True,
                             capture_output=True, text=True).stdout
    usage = {k: int(v) for k, v in re.findall(r"(REG|LOCAL|STACK):(\d+)", res)}
    return CompiledVariant(constexprs, opts["num_warps"], opts["enable_fp_fusion"], sass, usage["REG"],
                           usage["LOCAL"] // 4, usage["STACK"], triton.__version__, kernel)


_CACHE: dict = {}  # (constexpr items, fusion, kernel) -> CompiledVariant: compiling takes seconds
_CHILD = """import dataclasses, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("_fastneuron_sass", sys.argv[1])
m = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
keys = [(tuple(map(tuple, items)), fusion, kernel) for items, fusion, kernel in json.loads(sys.stdin.read())]
print(json.dumps([dataclasses.asdict(m._compile(*k)) for k in keys]))
"""


def _triton_interpreted() -> bool:
    """Whether this process imported triton's own library under TRITON_INTERPRET=1 (then
    its @jit functions, tl.philox among them, cannot be compiled here)."""
    import triton
    from triton.language import random
    return not isinstance(random.philox, triton.runtime.JITFunction)


def _in_children(keys: list) -> list:
    """Compile in fresh interpreters without TRITON_INTERPRET, one per core at most."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    n = max(1, min(len(keys), os.cpu_count() or 1))
    chunks = [keys[i::n] for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, __file__], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for _ in chunks]
    outs = [p.communicate(json.dumps(c)) for p, c in zip(procs, chunks)]
    done = {}
    for p, chunk, (out, err) in zip(procs, chunks, outs):
        if p.returncode:
            raise RuntimeError(f"compiling the kernels in a child process failed:\n{err}")
        done.update(zip(chunk, (CompiledVariant(**d) for d in json.loads(out))))
    return [done[k] for k in keys]


def compile_variants(specs, kernel: str = "sgd") -> list:
    """CompiledVariants of ``specs``, pairs (constexprs, enable_fp_fusion or None for the
    kernel module's ENABLE_FP_FUSION), of ``kernel`` (a key of :data:`KERNELS`), or
    triples (constexprs, enable_fp_fusion, kernel); cached within the process."""
    specs = [tuple(sp) + (kernel,) if len(sp) == 2 else tuple(sp) for sp in specs]
    keys = [(tuple(sorted(launch_constexprs(kernel=k, **cx).items())),
             kernel_namespace(k)[KERNELS[k].names[1]] if f is None else bool(f), k) for cx, f, k in specs]
    missing = [k for k in dict.fromkeys(keys) if k not in _CACHE]
    if missing:
        _CACHE.update(zip(missing, _in_children(missing) if _triton_interpreted() else
                          [_compile(*k) for k in missing]))
    return [_CACHE[k] for k in keys]


def compile_variant(*, enable_fp_fusion: bool | None = None, kernel: str = "sgd", **constexprs) -> CompiledVariant:
    """Compile ``kernel``'s function (``sgd_kernel`` by default) for sm_90 with
    ``launch_constexprs(**constexprs)``, and its module's ENABLE_FP_FUSION unless
    ``enable_fp_fusion`` is given (cached)."""
    return compile_variants([(constexprs, enable_fp_fusion, kernel)])[0]


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_LABEL = re.compile(r"^([.$][\w$.]*):$")
_TARGET = re.compile(r"`\(([^)\s]+)\)")


def parse_sass(sass: str):
    """[(addr, opcode with modifiers, operands)] and {label: addr} from ``nvdisasm -c``."""
    instrs, labels, pending = [], {}, []
    for line in sass.splitlines():
        m = _LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTR.search(line)
        if m:
            addr = int(m.group(1), 16)
            for lab in pending:
                labels[lab] = addr
            pending = []
            instrs.append((addr, m.group(3), m.group(4).strip()))
    return instrs, labels


def division_ffmas(instrs, labels) -> set:
    """Addresses of the FFMAs that belong to IEEE division or square root: those in called
    subroutines (the slow paths), and those reading the divisor or its reciprocal
    (MUFU.RCP's source and result, and FFMAs of those two alone: the reciprocal's
    refinement), or the radicand or its reciprocal square root (MUFU.RSQ's source and
    result: ``sqrt.rn``'s correction ``s + (x - s*s)*(y/2)``)."""
    called = sorted(labels[t] for a, op, o in instrs if op.startswith("CALL") for t in _TARGET.findall(o))
    ends = [a for a, op, _ in instrs if op.startswith("RET")]
    in_sub = lambda a: any(s <= a <= min([e for e in ends if e >= s], default=s) for s in called)  # noqa: E731
    # A slow path's call set-up (argument and return-address moves between the branch that
    # skips it and the CALL) runs on another path than the fast path laid out after it: it
    # clears no mark (a copy of a marked register still marks its destination).
    setup, label_at = set(), set(labels.values())
    for i, (_, op, _) in enumerate(instrs):
        if op.startswith("CALL"):
            k = i - 1
            while k >= 0 and i - k <= 4 and instrs[k][1].startswith(("MOV", "IMAD.MOV")) \
                    and instrs[k + 1][0] not in label_at:
                setup.add(instrs[k][0])
                k -= 1
    # A divisor in a uniform register (a loop-invariant one, as the batch size) may be
    # copied to a register before the MUFU.RCP that marks it, in address order: it is
    # marked from the start, its load included.
    uniform = {r for _, op, o in instrs if op.startswith("MUFU.RCP") and not op.startswith("MUFU.RCP64H")
               for r in re.findall(r"\bUR\d+\b", o)}
    marked, rsq, out = set(uniform), set(), set()
    for addr, op, operands in instrs:  # in address order: a register keeps its mark until redefined
        regs = re.findall(r"\bU?R\d+\b", operands)
        if addr in setup:
            if len(regs) > 1 and all(r in marked for r in regs[1:]):
                marked.add(regs[0])  # a copy of the divisor: marks, as below
            continue
        regs = re.findall(r"\bU?R\d+\b", operands)  # (with ptxas .maxnreg the divisor may sit in a UR)
        dst, srcs = (regs[0], regs[1:]) if regs else (None, [])
        if op.startswith(("MUFU.RCP", "MUFU.RSQ")) and not op.startswith("MUFU.RCP64H"):
            marked |= {dst, *srcs}
            if op.startswith("MUFU.RSQ"):
                rsq.add(dst)
            continue
        if op.startswith("FMUL") and any(r in rsq for r in srcs):
            marked.add(dst)  # sqrt.rn's s = x*y and y/2 from the reciprocal square root y
            rsq.add(dst)
            continue
        rsq.discard(dst)
        is_move = op.startswith(("MOV", "IMAD.MOV", "UMOV")) or (op.startswith("IMAD.U32") and "RZ, RZ" in operands)
        if is_move and srcs and all(r in marked for r in srcs):
            marked.add(dst)  # a copy of the divisor or its reciprocal
            continue
        if op.startswith("FFMA") and (in_sub(addr) or any(r in marked for r in srcs)):
            out.add(addr)
            if srcs and all(r in marked or r == "RZ" for r in srcs):
                marked.add(dst)
                continue
        if dst is not None and dst not in uniform and not op.startswith(("ST", "BRA", "ISETP", "FSETP", "FCHK")):
            marked.discard(dst)
            if "WIDE" in op or "64" in op:  # a register pair
                prefix, number = dst.split("R")
                marked.discard(f"{prefix}R{int(number) + 1}")
    return out


def slow_path_calls(body, labels) -> list:
    """For each CALL in the loop (an IEEE division's or square root's slow path), the size
    of its call block: from the instruction after the (predicated) branch that skips it to
    the last one before the label where the code goes on (argument moves, the CALL, the
    result's move or the jump over the fast path). Such a block runs only for the lanes
    whose fast path cannot give the correctly rounded result (zero, denormals, inf, NaN,
    extreme exponents)."""
    label_at = set(labels.values())
    sizes = []
    for i, (_, op, _) in enumerate(body):
        if not op.startswith("CALL"):
            continue
        lo = i
        while lo > 0 and i - lo < 8 and body[lo][0] not in label_at and not body[lo - 1][1].startswith("BRA"):
            lo -= 1
        hi = i
        while hi + 1 < len(body) and hi - i < 8 and body[hi + 1][0] not in label_at:
            hi += 1
        sizes.append(hi - lo + 1)
    return sizes


def find_loops(instrs, labels):
    """(start, end) address ranges of the loops: a branch back to a label at or before it."""
    loops = []
    for addr, op, operands in instrs:
        if op.startswith("BRA"):
            for t in _TARGET.findall(operands):
                if labels.get(t, addr) < addr:  # (a branch to itself is the end's trap)
                    loops.append((labels[t], addr))
    return loops


def analyze(variant: CompiledVariant) -> dict:
    """The instruction budget of one compiled variant (see the module docstring)."""
    cx = variant.constexprs
    instrs, labels = parse_sass(variant.sass)
    loops = find_loops(instrs, labels)
    outer = [lp for lp in loops if not any(o != lp and o[0] <= lp[0] and lp[1] <= o[1] for o in loops)]
    start, end = max(outer, key=lambda lp: lp[1] - lp[0])
    body = [i for i in instrs if start <= i[0] <= end]
    threads = 32 * variant.num_warps
    per_thread = cx["BLOCK"] // threads
    steps = (cx["GROUP"] if cx["UNROLL"] else 1) * per_thread  # neuron-steps per thread per iteration
    by_op = collections.Counter(op.split(".")[0] for _, op, _ in body)
    slow = slow_path_calls(body, labels)
    div_ffma = division_ffmas(instrs, labels)
    ffma = [a for a, op, _ in instrs if op.startswith("FFMA")]
    loop_ffma = [a for a in ffma if start <= a <= end]
    per_step = len(body) / steps
    regs = -(-variant.n_regs // 8) * 8  # registers are allocated per warp, 256 (8 a thread) at a time
    blocks = min(REGS_PER_SM // (regs * threads), MAX_THREADS_PER_SM // threads, MAX_BLOCKS_PER_SM)
    row = {
        "constexprs": cx, "num_warps": variant.num_warps, "enable_fp_fusion": variant.enable_fp_fusion,
        "n_regs": variant.n_regs, "n_spills": variant.n_spills, "stack_bytes": variant.stack,
        "kernel_instructions": len(instrs), "loop_instructions": len(body),
        "loop_range": [f"{start:#06x}", f"{end:#06x}"], "loops": len(loops),
        "neuron_steps_per_iteration": steps,
        "divergence_checks_in_loop": sum(1 for _, op, o in body if op.startswith("FSETP") and FLT_MAX_SASS in o),
        "instructions_per_neuron_step": per_step,
        "per_neuron_step_by_opcode": {k: v / steps for k, v in by_op.most_common()},
        "loop_opcodes": dict(collections.Counter(op for _, op, _ in body).most_common()),  # with modifiers
        "ffma_kernel": len(ffma), "ffma_loop": len(loop_ffma),
        "ffma_division_kernel": len(div_ffma), "ffma_division_loop": sum(1 for a in loop_ffma if a in div_ffma),
        "ffma_outside_division": sum(1 for a in ffma if a not in div_ffma),
        "local_memory_in_loop": sum(1 for _, op, _ in body if op.startswith(("LDL", "STL"))),
        "dfma_kernel": sum(1 for _, op, _ in instrs if op.startswith("DFMA")),
        "dfma_loop": sum(1 for _, op, _ in body if op.startswith("DFMA")),
        "float64_division_calls": sum(1 for _, op, o in instrs if op.startswith("CALL") and "div_rn_f64" in o),
        "slow_path_calls_in_loop": len(slow),
        "fast_path_instructions_per_neuron_step": (len(body) - sum(slow)) / steps,
        "blocks_per_sm": blocks, "occupancy": blocks * threads / MAX_THREADS_PER_SM,
        "issue_bound_neuron_steps_per_s": issue_bound(per_step),
    }
    if KERNELS[variant.kernel].per_parameter:
        row.update(parameter_counts(variant, instrs, labels, loops, (start, end), body))
    return row


def parameter_counts(variant: CompiledVariant, instrs, labels, loops, main, body) -> dict:
    """SPEC §6's kernels: instructions per parameter-step (one coordinate w_i of one member
    at one step; d of them make a neuron-step, whose bias update counts among them).

    ``neuron_kernel``: the main loop is the loop over groups of GROUP steps, as in the v2
    kernels: its static count over GROUP * BLOCK/threads * D parameter-steps a thread.
    ``neuron_chunked_kernel``: the main loop is the loop over steps; the loops directly inside
    it (the forward pass's and the update's loops over chunks, with B = 1) run once per
    chunk, cdiv(D, DB) times a step: a step costs the main loop's instructions outside them
    plus cdiv(D, DB) times theirs, over BLOCK/threads * D parameter-steps a thread. (With
    B > 1 the chunk loops sit inside loops over the samples: not counted, None.)"""
    cx = variant.constexprs
    threads = 32 * variant.num_warps
    members = cx["BLOCK"] / threads
    slow_all = slow_path_calls(body, labels)
    if variant.kernel == "neuron":
        steps = (cx["GROUP"] if cx["UNROLL"] else 1)
        total, fast = len(body), len(body) - sum(slow_all)
        inner_sizes = []
    else:
        if cx["BATCH"] != 1:
            return {"instructions_per_parameter_step": None, "fast_path_instructions_per_parameter_step": None}
        start, end = main
        inside = [lp for lp in loops if lp != main and start <= lp[0] and lp[1] <= end]
        direct = sorted({lp for lp in inside if not any(o != lp and o[0] <= lp[0] and lp[1] <= o[1] for o in inside)})
        chunks = -(-cx["D"] // cx["DB"])
        parts = [[i for i in body if a <= i[0] <= b] for a, b in direct]
        inner_sizes = [len(p) for p in parts]
        inner_slow = [sum(slow_path_calls(p, labels)) for p in parts]
        total = len(body) + (chunks - 1) * sum(inner_sizes)
        fast = total - sum(slow_all) - (chunks - 1) * sum(inner_slow)
        steps = 1
    params = steps * members * cx["D"]
    per_param = total / params
    return {
        "parameter_steps_per_iteration": params, "chunk_loop_instructions": inner_sizes,
        "instructions_per_parameter_step": per_param,
        "fast_path_instructions_per_parameter_step": fast / params,
        "instructions_per_neuron_step_d": per_param * cx["D"],
        "issue_bound_parameter_steps_per_s": issue_bound(per_param),
    }


def issue_bound(instructions_per_neuron_step: float) -> float:
    """Neuron-steps/s if the H200 issued one instruction per scheduler per cycle and
    nothing else limited it: 132 SMs x 4 x 32 lanes x 1.98 GHz / instructions."""
    return SMS * SCHEDULERS * LANES * CLOCK_HZ / instructions_per_neuron_step


def _output(*cmd) -> str:
    try:
        return subprocess.run(cmd, cwd=KERNEL_SOURCE.parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(kernels=("sgd",)) -> dict:
    """Date, triton and ptxas versions, target and commit of a report on ``kernels`` (keys
    of :data:`KERNELS`), with each kernel's source and its hash."""
    import triton
    sources = [NORMAL_SOURCE, COMMON_SOURCE] + [p for k in kernels for p in (*KERNELS[k].sources, KERNELS[k].source)]
    sources = list(dict.fromkeys(sources))
    modified = [p.name for p in sources if _output("git", "status", "--porcelain", p.name)]
    head = {"date": datetime.date.today().isoformat(), "triton": triton.__version__,
            "ptxas": " ".join(re.findall(r"release \S+ V\S+", _output(str(_tool("ptxas")), "--version"))),
            "target": "GPUTarget(%r, %d, %d)" % TARGET, "commit": _output("git", "rev-parse", "--short", "HEAD")
            + (f" ({', '.join(modified)} modified)" if modified else "")}
    for k in kernels:
        info = KERNELS[k]
        head["kernel" if k == "sgd" else f"kernel {k}"] = (
            f"kernels/{info.source.name}:{info.function}, source sha256 "
            + hashlib.sha256(info.source.read_bytes() + COMMON_SOURCE.read_bytes() + NORMAL_SOURCE.read_bytes()
                             + b"".join(p.read_bytes() for p in info.sources)).hexdigest()[:12]
            + f" (with {', '.join(p.name for p in (COMMON_SOURCE, NORMAL_SOURCE, *info.sources))})")
    return head


def kernel_of(name: str) -> str:
    """The kernel (a key of :data:`KERNELS`) whose variants include ``name``."""
    return next(k for k, info in KERNELS.items() if name in info.variants)


def report(variants=None) -> list:
    """One row (``analyze``'s dict with a ``name`` and its ``kernel``) per variant: a dict
    name -> constexprs of one kernel's variants, or a list of names of any kernel's;
    by default every variant of every kernel (SGD's, then Adam's)."""
    if variants is None:
        variants = [n for info in KERNELS.values() for n in info.variants]
    if isinstance(variants, dict):
        kernel = next((k for k, info in KERNELS.items() if all(n in info.variants for n in variants)), "sgd")
        specs = [(cx, None, kernel) for cx in variants.values()]
        names = list(variants)
    else:
        names = list(variants)
        specs = [(KERNELS[kernel_of(n)].variants[n], None, kernel_of(n)) for n in names]
    compiled = compile_variants(specs)
    return [{"name": name, "kernel": k, **analyze(v)} for name, (_, _, k), v in zip(names, specs, compiled)]


_CLASSES = {"FMUL": "FMUL/FADD", "FADD": "FMUL/FADD", "IMAD": "IMAD", "LOP3": "LOP3", "SEL": "SEL", "FSEL": "SEL",
            "FSETP": "FSETP", "ISETP": "ISETP", "IADD3": "IADD3"}
_COLUMNS = ["FMUL/FADD", "IMAD", "LOP3", "SEL", "FSETP", "ISETP", "IADD3", "uniform", "other"]


def normal_costs(rows) -> dict:
    """SPEC §6's kernels: for each "X normal" variant beside its "X", the instructions per
    parameter-step that Gaussian x adds: the cost of the normals drawn per parameter-step
    (one in ``neuron_kernel``; two in ``neuron_chunked_kernel``, which draws each sample's
    x twice, in the forward pass and in the update)."""
    by_name = {r["name"]: r for r in rows}
    out = {}
    for r in rows:
        twin = by_name.get(r["name"].replace(" normal", "")) if r["name"].endswith(" normal") else None
        if twin is not None and r.get("instructions_per_parameter_step") is not None:
            out[r["name"]] = {k: r[k] - twin[k] for k in ("instructions_per_parameter_step",
                                                          "fast_path_instructions_per_parameter_step")}
    return out


def format_parameter_report(rows) -> list:
    """The lines of SPEC §6's kernels' table: per parameter-step, and the normals' cost."""
    lines = [f"{'variant':<28} {'kernel':<22} {'D':>5} {'DB':>3} {'BLOCK':>5} {'instr/param':>11} {'fast/param':>10}"
             f" {'instr/neuron':>12} {'regs':>4} {'spill':>5} {'LDL/STL':>7} {'FFMA(div)':>10}"
             f" {'est. param-steps/s':>18}"]
    for r in rows:
        cx = r["constexprs"]
        per, fast = r["instructions_per_parameter_step"], r["fast_path_instructions_per_parameter_step"]
        fmt = (lambda v, w: f"{v:>{w}.2f}" if v is not None else f"{'n/a':>{w}}")  # noqa: E731
        lines.append(f"{r['name']:<28} {KERNELS[r['kernel']].function:<22} {cx['D']:>5} {cx['DB']:>3} {cx['BLOCK']:>5}"
                     f" {fmt(per, 11)} {fmt(fast, 10)} {fmt(r.get('instructions_per_neuron_step_d'), 12)}"
                     f" {r['n_regs']:>4} {r['n_spills']:>5} {r['local_memory_in_loop']:>7}"
                     f" {r['ffma_kernel']:>5}({r['ffma_division_kernel']:>3})"
                     f" {r.get('issue_bound_parameter_steps_per_s') or float('nan'):>18.3e}")
    lines.append("\ninstr/param: SASS instructions per parameter-step (one weight coordinate of one member at one "
                 "step; a neuron-step is D of them, its bias update included), static counts: neuron_kernel's loop "
                 "over groups of GROUP steps over its GROUP*D parameter-steps a thread (one member a thread); "
                 "neuron_chunked_kernel's loop over steps with its two loops over chunks (forward, update) counted "
                 "cdiv(D, DB) times, over D. fast/param: without the slow-path call blocks of IEEE division and "
                 "square root; instr/neuron: instr/param * D; LDL/STL: local-memory accesses in the main loop "
                 "(static); est.: issue-bound H200, 132*4*32*1.98e9/instr/param.")
    costs = normal_costs(rows)
    for name, c in costs.items():
        lines.append(f"normals: {name} - {name.replace(' normal', '')}: "
                     f"{c['instructions_per_parameter_step']:+.2f} instr/param-step "
                     f"({c['fast_path_instructions_per_parameter_step']:+.2f} fast path)")
    return lines + [""]


def format_report(rows, head: dict | None = None) -> str:
    """The rows as a text table, then each variant's loop and opcodes (after ``head``'s lines);
    SPEC §6's kernels in a table of their own (:func:`format_parameter_report`)."""
    lines = [f"# {k}: {v}" for k, v in (head or {}).items()]
    neuron_rows = [r for r in rows if KERNELS[r["kernel"]].per_parameter]
    rows = [r for r in rows if not KERNELS[r["kernel"]].per_parameter]
    details = [f"{r['name']}: main loop {r['loop_range'][0]}-{r['loop_range'][1]}, {r['loop_instructions']} "
               f"instructions (chunk loops {r.get('chunk_loop_instructions')}), for "
               f"{r.get('parameter_steps_per_iteration')} parameter-steps a thread; the main loop's opcodes: "
               + ", ".join(f"{k} {v}" for k, v in list(r["loop_opcodes"].items())[:12]) for r in neuron_rows]
    if neuron_rows:
        lines += format_parameter_report(neuron_rows)
        if not rows:
            return "\n".join(lines + details) + "\n"
    lines.append(f"{'variant':<24} {'instr/step':>10} {'fast/step':>9} " + " ".join(f"{c:>9}" for c in _COLUMNS)
                 + f" {'regs':>4} {'spill':>5} {'blk/SM':>6} {'FFMA(div)':>10} {'loopFFMA(div)':>13} {'DFMA':>4}"
                 + f" {'LDL/STL':>7} {'est. steps/s':>12}")
    for r in rows:
        c = collections.Counter()
        for op, n in r["per_neuron_step_by_opcode"].items():
            c[_CLASSES.get(op, "uniform" if op.startswith("U") else "other")] += n
        lines.append(f"{r['name']:<24} {r['instructions_per_neuron_step']:>10.2f}"
                     f" {r['fast_path_instructions_per_neuron_step']:>9.2f} "
                     + " ".join(f"{c[k]:>9.2f}" for k in _COLUMNS)
                     + f" {r['n_regs']:>4} {r['n_spills']:>5} {r['blocks_per_sm']:>6}"
                     + f" {r['ffma_kernel']:>5}({r['ffma_division_kernel']:>3})"
                     + f" {r['ffma_loop']:>8}({r['ffma_division_loop']:>3}) {r['dfma_kernel']:>4}"
                     + f" {r['local_memory_in_loop']:>7} {r['issue_bound_neuron_steps_per_s']:>12.3e}")
    lines.append("\ninstr/step and the class columns: SASS instructions per neuron-step in the main loop "
                 "(static count / neuron-steps per thread per iteration); fast/step: the same without the "
                 "call blocks of IEEE division's and square root's slow paths (taken only for zero, denormal, "
                 "inf, NaN or extreme operands); blk/SM: blocks of 128 threads per SM "
                 "that the registers allow; FFMA(div): FFMAs in the kernel (of them, IEEE division's and "
                 "square root's); DFMA: float64 fmas in the kernel (the Adam kernel's: Markstein's corrections of "
                 "lr / bc1, four a step); est.: issue-bound H200, 132*4*32*1.98e9/instr.\n")
    by_name = {r["name"]: r for r in rows}
    if "base" in by_name and any(r.get("kernel") == "adam" for r in rows):
        base = by_name["base"]["instructions_per_neuron_step"]
        for r in rows:
            if r.get("kernel") == "adam":
                lines.append(f"{r['name']} / SGD base: {r['instructions_per_neuron_step'] / base:.2f}x static, "
                             f"{r['fast_path_instructions_per_neuron_step'] / base:.2f}x fast path")
        lines.append("")
    for r in rows:
        ops = ", ".join(f"{k} {v:.2f}" for k, v in r["per_neuron_step_by_opcode"].items())
        lines.append(f"{r['name']}: loop {r['loop_range'][0]}-{r['loop_range'][1]}, {r['loop_instructions']} "
                     f"instructions for {r['neuron_steps_per_iteration']} neuron-steps per thread "
                     f"({r['divergence_checks_in_loop']} divergence checks, {r['slow_path_calls_in_loop']} "
                     f"slow-path calls); per neuron-step: {ops}")
    return "\n".join(lines + details) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastneuron.kernels.sass", description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the header and rows as JSON")
    p.add_argument("--variant", action="append", choices=[n for info in KERNELS.values() for n in info.variants],
                   help="only these (repeatable; default: every variant of the SGD and the Adam kernel)")
    p.add_argument("--kernel", action="append", choices=list(KERNELS),
                   help="every variant of these kernels (repeatable; 'neuron' and 'neuron_chunked': SPEC §6's)")
    args = p.parse_args(argv)
    if not tools_available():
        print("sass: needs triton with its nvidia tools (ptxas, cuobjdump, nvdisasm)", file=sys.stderr)
        return 2
    names = list(args.variant or [])
    names += [n for k in args.kernel or [] for n in KERNELS[k].variants]
    if not names:
        names = [n for k in ("sgd", "adam") for n in KERNELS[k].variants]
    rows = report(names)
    head = header(tuple(dict.fromkeys(r["kernel"] for r in rows)))
    sys.stdout.write(format_report(rows, head))
    if args.json:
        Path(args.json).write_text(json.dumps({**head, "variants": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

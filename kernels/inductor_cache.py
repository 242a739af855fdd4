"""Inductor's on-disk cache for fastneuron's CPU graphs, one directory per CPU kind and
vector ISA in effect.

Inductor's FX graph cache (and the AOT autograd cache around it) keys a graph by torch's
version, its config and the CUDA device, but not by the CPU vector ISA the generated C++
was written for: that ISA is picked per process, from the CPU's flags and
``ATEN_CPU_CAPABILITY``. A cache written under one ISA hands its source to a process
under another, which compiles it with its own ISA's flags:

- AVX-512 code under ``ATEN_CPU_CAPABILITY=default`` (SPEC §3c's setting for torch
  parity), or on a machine without AVX-512 that shares the cache directory (a home
  directory shared by a cluster's login and compute nodes): ``CppCompileError ...
  'at::vec' has not been declared`` (or ``'tmp_acc0_vec' was not declared``);
- scalar code written under ``ATEN_CPU_CAPABILITY=default`` builds fine with AVX-512's
  flags, and an AVX-512 run silently runs it (bench/results/inductor-cache-isa-2026-12-07.txt:
  no vector code in that cache);
- (from reading the code, not seen) the compiled libraries are keyed by their source and
  command line, whose ``-march=native`` reads the same on every machine: a library built
  on another CPU kind could be loaded as is.

:func:`inductor_backend` is Inductor as a ``torch.compile`` backend that compiles under
:func:`keyed_cache`: ``TORCHINDUCTOR_CACHE_DIR`` points at a subdirectory of the cache
(the user's ``TORCHINDUCTOR_CACHE_DIR``, else Inductor's default) named by
:func:`cache_key` while Inductor compiles (its FX graph, AOT autograd and C++ caches
are all read and written then), and is put back afterwards; the compiled calls
themselves run untouched. A second run with the same CPU and capability finds its
cache warm; a run under another one compiles into its own directory.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import os
import platform
import re
import tempfile

from fastneuron.machine import cpu_fields

ENV = "TORCHINDUCTOR_CACHE_DIR"

#: /proc/cpuinfo's fields that name the CPU kind and what it can run (x86, then Arm);
#: the rest (clock, core and APIC ids, bogomips, microcode) differ between cores or boots.
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "flags", "CPU implementer", "CPU architecture",
               "CPU variant", "CPU part", "Features")


@functools.lru_cache(maxsize=None)
def _cpu_identity() -> str:
    """The CPU kind: its first processor's :data:`_CPU_FIELDS` in /proc/cpuinfo (flags
    sorted), or ``platform.processor()`` where there is no /proc/cpuinfo."""
    fields = {name: " ".join(sorted(value.split())) if name in ("flags", "Features") else value
              for name, value in cpu_fields().items() if name in _CPU_FIELDS}
    if not fields:
        fields["processor"] = platform.processor()
    return ";".join(f"{k}={fields[k]}" for k in sorted(fields))


@functools.lru_cache(maxsize=None)
def cache_key(aten_env=None) -> str:
    """``<capability>-<12 hex digits>``: the capability in effect
    (``torch.backends.cpu.get_cpu_capability()``, lower case), then a digest of it, of
    ``ATEN_CPU_CAPABILITY`` as set (``aten_env``: Inductor reads it on its own), the
    machine and the CPU kind (:func:`_cpu_identity`)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()
    text = "\n".join([capability, repr(aten_env), platform.machine(), _cpu_identity()])
    return f"{re.sub(r'[^a-z0-9_]', '_', capability)}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _default_base() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch: Inductor's long-standing default
        user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
        return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    return default_cache_dir()


@functools.lru_cache(maxsize=None)
def cache_dir(base=None, aten_env=None) -> str:
    """fastneuron's Inductor cache: ``<base>/fastneuron-<cache_key>``, ``base`` the
    ``TORCHINDUCTOR_CACHE_DIR`` given (else Inductor's default); ``base`` itself when
    it is already such a directory."""
    base = os.path.abspath(base or _default_base())
    name = f"fastneuron-{cache_key(aten_env)}"
    return base if os.path.basename(base) == name else os.path.join(base, name)


@contextlib.contextmanager
def keyed_cache(device_type: str):
    """``TORCHINDUCTOR_CACHE_DIR`` set to :func:`cache_dir` inside (CPU only: CUDA's
    kernels do not depend on the CPU), as it was afterwards. Inductor reads the variable
    whenever it opens its caches."""
    if device_type != "cpu":
        yield
        return
    before = os.environ.get(ENV)
    target = cache_dir(before, os.environ.get("ATEN_CPU_CAPABILITY"))
    if before == target:
        yield
        return
    os.environ[ENV] = target
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def inductor_backend(options: dict):
    """A ``torch.compile`` backend: Inductor with ``options`` (what
    ``torch.compile(options=...)`` passes it), compiling under :func:`keyed_cache`. Dynamo
    calls it only to compile (the first call, a guard's failure), so the compiled calls
    pay nothing for the cache's directory (setting the variable around every call cost
    15-30 us a call, 10% of a segment at 2**10 members)."""
    options = dict(options)

    def inductor(gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        with keyed_cache("cpu"):
            return compile_fx(gm, example_inputs, config_patches=dict(options))

    return inductor

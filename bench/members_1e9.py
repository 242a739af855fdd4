"""A billion members on the 2-core CPU: a grid described, not materialized, trained into
a sharded output directory, opened lazily and summarized (issue 14).

    python bench/members_1e9.py                          # 10**9 members, T = 12, compile, on the CPU
    python bench/members_1e9.py --members 1000000        # smoke test (seconds)
    python bench/members_1e9.py --members 1e8 --steps 12 --keep --out /tmp/run/

The members are ``fastneuron.grid(seeds=range(M // len(lrs)), lrs=lrs)`` (seeds vary
slowest: member i has seed ``i // len(lrs)`` and lr ``lrs[i % len(lrs)]``), trained with
``out=DIR/``: the results go to ``DIR/part-00000/*.npy`` plus ``DIR/manifest.json`` as
they are produced, nothing O(M) is kept in memory. The script measures

- wall time of ``train`` (and its split from ``fastneuron.progress.last_run_timing()``:
  start-up, i.e. up to the end of the first chunk, and the rest), member-steps/s;
- peak host memory: ``ru_maxrss`` and the peak of the anonymous resident memory
  (``RssAnon + RssShmem`` from ``/proc/PID/status``, sampled by a separate process);
  the limit of the issue (4 GiB beyond the output on disk) is checked on the latter;
- bytes on disk under DIR (apparent size and allocated blocks);
- ``fastneuron.load(DIR)`` and ``summary()`` (time and peak memory);
- members 0, 1, M//2 and M-1 against a run of that member alone, in memory, on the
  eager backend, bit for bit (weight, bias, diverged_at and, with ``--log-every``, the
  logged rows);

and appends one JSON row to ``--results`` (default
``bench/results/members-1e9-<date>.json``) and rewrites the markdown table beside it
(same name, ``.md``). Exit status 1 when the memory limit is exceeded or a check fails
(the row is written anyway, with ``ok: false`` and the reason).

With ``--steps`` below 12 the compile backend runs no compiled segment: its compiled
call covers 12 samples, and a remainder of fewer runs the same functions uncompiled
(``kernels/compiled.py``); only the init (above 2**16 members a block) is
compiled. The row records how many samples ran compiled.

Needs about 16 bytes a member of free disk (16 GB for 10**9) plus 8 bytes a member per
logged row.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

GIB = 2**30
#: The issue's limit: peak host memory beyond the output written to disk.
LIMIT_BYTES = 4 * GIB
#: Bytes on disk per member without history: weight f4, bias f4, diverged_at i8.
FINAL_BYTES_PER_MEMBER = 16
#: Samples per compiled call of the compile backend (fastneuron.kernels.compiled.SEGMENT_SAMPLES).
SEGMENT_SAMPLES = 12
REPO = Path(__file__).resolve().parent.parent

# -- memory -----------------------------------------------------------------------------
#
# Why not only ru_maxrss: fastneuron.load opens the parts as memory maps, and summary()
# (and the checks below) read the output through them. Every page of a mapped file that
# the process touched counts in its resident set (RssFile) until the kernel drops it, so
# ru_maxrss after a pass over 16 GB of output can approach 16 GB even though those pages
# are the output on disk, held by the page cache and reclaimable at any time. (The
# writer itself uses pwrite, which leaves no mapped pages; a writer that mapped its
# files would show the same effect while training.)
# What the run itself needs is its anonymous memory (heap, torch tensors, the block in
# training): RssAnon, plus RssShmem (shared anonymous memory; 0 here unless something
# uses tmpfs or shared tensors). The kernel keeps a high-water mark of the whole RSS
# only (VmHWM), not of RssAnon, so RssAnon is sampled. The sampler is a separate
# process reading /proc/PID/status: a thread in this process would need the GIL, which
# a long compiled or numpy call may hold for a whole block, and would miss its peak.
# Sampling can still miss a spike shorter than the interval; ru_maxrss bounds it above.

_SAMPLER = r"""
import sys, time
pid, interval, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
keys = ("RssAnon:", "RssFile:", "RssShmem:")
with open(path, "w") as out:
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                lines = f.read().splitlines()
        except OSError:
            break  # the measured process is gone
        kib = {k: 0 for k in keys}
        for line in lines:
            head = line.split(None, 1)[0] if line else ""
            if head in kib:
                kib[head] = int(line.split()[1])
        out.write(f"{time.monotonic():.4f} {kib['RssAnon:']} {kib['RssFile:']} {kib['RssShmem:']}\n")
        out.flush()
        time.sleep(interval)
"""


class MemorySampler:
    """RssAnon, RssFile and RssShmem of this process every ``interval`` seconds, from a
    separate process; :meth:`phase` marks time spans, :meth:`peaks` gives each span's
    maxima (bytes). ``time.monotonic()`` is the same clock in both processes."""

    def __init__(self, path: Path, interval: float):
        self.path = path
        self.phases: dict = {}
        self.proc = subprocess.Popen([sys.executable, "-c", _SAMPLER, str(os.getpid()), str(interval), str(path)],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (path.exists() and path.stat().st_size):
            time.sleep(0.01)  # the first sample is in before anything is measured

    def start(self, name: str) -> None:
        self.phases[name] = [time.monotonic(), None]

    def stop(self, name: str) -> None:
        self.phases[name][1] = time.monotonic()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its handle
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def samples(self) -> np.ndarray:
        rows = []
        with open(self.path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4:
                    rows.append([float(p) for p in parts])
        return np.array(rows).reshape(-1, 4)

    def peaks(self) -> dict:
        """Per phase: samples, peak anonymous (RssAnon + RssShmem) bytes, and RssAnon,
        RssFile at that sample; 'baseline': the first sample."""
        s = self.samples()
        out = {}
        if len(s):
            out["baseline"] = {"anon_bytes": int(s[0, 1] + s[0, 3]) * 1024, "file_bytes": int(s[0, 2]) * 1024}
        for name, (t0, t1) in self.phases.items():
            inside = (s[:, 0] >= t0) & (s[:, 0] <= (t1 if t1 is not None else math.inf))
            idx = np.flatnonzero(inside)
            if not len(idx):  # a span shorter than the interval: the first sample after its start
                idx = np.flatnonzero(s[:, 0] >= t0)[:1]
            if not len(idx):
                out[name] = {"samples": 0}
                continue
            anon = s[idx, 1] + s[idx, 3]
            k = idx[int(np.argmax(anon))]
            out[name] = {"samples": int(len(idx)), "peak_anon_bytes": int(anon.max()) * 1024,
                         "rss_anon_bytes_at_peak": int(s[k, 1]) * 1024, "rss_shmem_bytes_at_peak": int(s[k, 3]) * 1024,
                         "peak_rss_file_bytes": int(s[idx, 2].max()) * 1024}
        return out


def ru_maxrss_bytes() -> int:
    """Peak resident set size of this process so far, file-backed pages included."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


# -- the machine ------------------------------------------------------------------------


def cpu_name() -> str:
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields.setdefault(k.strip(), v.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    return f"{name} (cpu family {fields['cpu family']})" if "cpu family" in fields else name


def mem_total_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def version_of(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> Optional[str]:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" (modified)" if dirty else "")


# -- the output -------------------------------------------------------------------------


def disk_usage(root: Path) -> dict:
    """Apparent bytes, allocated bytes and files under ``root``, and apparent bytes by
    file name (summed over the parts)."""
    apparent = allocated = files = 0
    by_name: dict = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
            by_name[n] = by_name.get(n, 0) + st.st_size
    return {"bytes": apparent, "allocated_bytes": allocated, "files": files, "bytes_by_file_name": by_name}


def part_dirs(root: Path) -> list:
    """The parts' directories in member order: from ``manifest.json`` (its ``parts``:
    name, start, stop; contiguous, in order), else the finished ``part-*`` directories
    by name (rank r holds [r*M//W, (r+1)*M//W))."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return [root / p["name"] for p in sorted(manifest["parts"], key=lambda p: p["start"])]
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(p for p in root.glob("part-*") if p.is_dir() and not p.name.endswith(".tmp"))


def part_arrays(root: Path, name: str) -> list:
    """The parts' ``name`` arrays, memory-mapped, in member order (empty if a part lacks it)."""
    dirs = part_dirs(root)
    if not dirs or not all((p / name).exists() for p in dirs):
        return []
    return [np.load(p / name, mmap_mode="r") for p in dirs]


def member_values(parts: list, i: int, axis: int = 0) -> np.ndarray:
    """Member ``i`` of the concatenation of ``parts`` along ``axis`` (0: (n,), 1: (L, n))."""
    for a in parts:
        n = a.shape[axis]
        if i < n:
            return np.array(a[i] if axis == 0 else a[:, i])
        i -= n
    raise IndexError("member beyond the parts' total length")


def same_bits(a, b) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a.view(np.uint8), b.view(np.uint8)))


def check_members(root: Path, indices: list, n_lrs: int, lrs: list, args) -> list:
    """Each member in ``indices`` against a run of that member alone, eager, in memory."""
    import fastneuron

    names = ["weight.npy", "bias.npy", "diverged_at.npy"]
    if args.log_every:
        names += ["history_weight.npy", "history_bias.npy"]
    parts = {n: part_arrays(root, n) for n in names}
    checks = []
    for i in indices:
        seed, lr = i // n_lrs, lrs[i % n_lrs]  # fastneuron.grid: the first axis varies slowest
        alone = fastneuron.train(seeds=[seed], lrs=[lr], steps=args.steps, backend="eager", device="cpu",
                                 log_every=args.log_every, progress=False)
        want = {"weight.npy": alone.weight.numpy(), "bias.npy": alone.bias.numpy(),
                "diverged_at.npy": alone.diverged_at.numpy()}
        if args.log_every:
            want["history_weight.npy"] = alone.history_weight.numpy()[:, 0]
            want["history_bias.npy"] = alone.history_bias.numpy()[:, 0]
        row = {"member": i, "seed": seed, "lr": lr, "equal": True, "differs": []}
        for n in names:
            if not parts[n]:
                row["equal"] = False
                row["differs"].append(f"{n} missing")
                continue
            got = member_values(parts[n], i, axis=1 if n.startswith("history_") else 0)
            w = np.asarray(want[n])
            if w.size != got.size or not same_bits(got, w.reshape(got.shape)):
                row["equal"] = False
                row["differs"].append(n)
        row["weight"] = float(want["weight.npy"][0])
        checks.append(row)
    return checks


def jsonable(x):
    """Plain JSON values of a summary's rows (numpy scalars, NaN, tuples)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


# -- the report -------------------------------------------------------------------------


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"


def markdown(rows: list) -> str:
    head = ["date", "members", "steps", "block", "train s", "start-up s", "member-steps/s", "peak anon RSS",
            "ru_maxrss", "on disk", "B/member", "load s", "summary s", "summary peak anon", "checks", "ok"]
    lines = ["# fastneuron: 10**9 members, sharded output (bench/members_1e9.py)", "",
             "Each row: `python bench/members_1e9.py` on the machine and versions in the JSON file beside this "
             "one. peak anon RSS: the peak of RssAnon + RssShmem of the process while training (sampled); "
             "ru_maxrss includes the memory-mapped output pages (the output on disk, in the page cache).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        t = r["timing"]
        mem, disk = r["memory"], r["disk"]
        cells = [r["date"], f"{r['members']:,}", str(r["steps"]), f"{r['member_block']:,}", f"{t['train_s']:.1f}",
                 "-" if t.get("start_up_s") is None else f"{t['start_up_s']:.1f}",
                 f"{r['member_steps_per_s']:.3g}", fmt_bytes(mem["train_peak_anon_bytes"]),
                 fmt_bytes(mem["ru_maxrss_bytes_after_train"]), fmt_bytes(disk["bytes"]),
                 f"{disk['bytes'] / r['members']:.1f}", f"{t['load_s']:.2f}", f"{t['summary_s']:.1f}",
                 fmt_bytes(mem["summary_peak_anon_bytes"]),
                 f"{sum(c['equal'] for c in r['checks'])}/{len(r['checks'])} equal", "yes" if r["ok"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Machine of the last row: {rows[-1]['device']}, {rows[-1]['threads']} threads, "
              f"torch {rows[-1]['versions']['torch']}, commit {rows[-1]['commit']}.", ""]
    return "\n".join(lines)


def write_results(path: Path, row: dict) -> None:
    rows = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
            rows = old if isinstance(old, list) else [old]
        except (OSError, ValueError):
            rows = []
    rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)
    md = path.with_suffix(".md")
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(markdown(rows))
    os.replace(tmp, md)


# -- main -------------------------------------------------------------------------------


def parse_args(argv):
    today = datetime.date.today().isoformat()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=float, default=1e9, help="members M (default 1e9); a multiple of len(lrs)")
    ap.add_argument("--steps", type=int, default=12, help="steps T (default 12: one compiled call of 12 samples)")
    ap.add_argument("--lrs", default="0.01,0.02", help="comma-separated learning rates, the grid's fast axis "
                    "(default 0.01,0.02)")
    ap.add_argument("--member-block", type=float, default=2**23, help="members per block (default 2**23)")
    ap.add_argument("--log-every", type=int, default=None, help="log (w, b) every k steps (default: no history)")
    ap.add_argument("--backend", default="compile", help="default compile")
    ap.add_argument("--out", default=None, help="output directory, must not exist or be empty "
                    "(default: a fresh directory under /tmp)")
    ap.add_argument("--results", default=str(REPO / "bench" / "results" / f"members-1e9-{today}.json"),
                    help="JSON file to append the row to (a .md table is written beside it)")
    ap.add_argument("--keep", action="store_true", help="keep the output directory (default: remove it if this "
                    "script created it)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the small run that compiles the kernels first")
    ap.add_argument("--sample-interval", type=float, default=0.2, help="seconds between memory samples (0.2)")
    ap.add_argument("--progress", action="store_true", help="show fastneuron's progress bar")
    args = ap.parse_args(argv)
    args.members = int(args.members)
    args.member_block = int(args.member_block)
    try:
        args.lr_list = [float(v) for v in args.lrs.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--lrs: not a comma-separated list of numbers: {args.lrs!r}")
    if not args.lr_list:
        ap.error("--lrs: no learning rate")
    if args.members < 1 or args.members % len(args.lr_list):
        ap.error(f"--members: {args.members} is not a positive multiple of the {len(args.lr_list)} learning rates")
    if args.steps < 1 or args.member_block < 1:
        ap.error("--steps and --member-block must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    m, lrs = args.members, args.lr_list
    n_lrs = len(lrs)
    n_seeds = m // n_lrs
    n_logged = len(range(0, args.steps, args.log_every)) if args.log_every else 0
    expected_bytes = m * (FINAL_BYTES_PER_MEMBER + 8 * n_logged)

    # Scratch: the sampler's log always, the output too unless --out names one.
    scratch = Path(tempfile.mkdtemp(prefix="fastneuron-members-"))
    created = args.out is None
    out = scratch / "run" if created else Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"members_1e9: --out {out} exists and is not an empty directory", file=sys.stderr)
        return 2
    created = created or not out.exists()
    probe = out
    while not probe.exists():  # the nearest existing directory: where the output will go
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < 1.1 * expected_bytes:
        print(f"members_1e9: the output needs about {fmt_bytes(expected_bytes)} on disk and "
              f"{fmt_bytes(free)} is free under {probe}", file=sys.stderr)
        return 2
    out_arg = str(out).rstrip("/") + "/"  # a directory: out= ends with "/"

    sampler = MemorySampler(scratch / "rss.log", args.sample_interval)
    try:
        return run(args, m, lrs, n_seeds, n_logged, expected_bytes, out, out_arg, sampler)
    finally:
        sampler.close()
        if not args.keep:
            if created and out.exists():
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept           {out}")


def run(args, m, lrs, n_seeds, n_logged, expected_bytes, out: Path, out_arg: str, sampler: MemorySampler) -> int:
    import torch

    import fastneuron
    from fastneuron.progress import last_run_timing

    n_lrs = len(lrs)
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"fastneuron {fastneuron.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{cpu_name()}, load {load_avg}")
    print(f"members        {m:,} = {n_seeds:,} seeds x {n_lrs} lrs, steps {args.steps}, backend {args.backend}, "
          f"block {args.member_block:,} ({math.ceil(m / args.member_block)} blocks)")
    compiled_samples = (args.steps // SEGMENT_SAMPLES) * SEGMENT_SAMPLES if args.backend == "compile" else None
    if args.backend == "compile" and compiled_samples < args.steps:
        print(f"note           {args.steps - compiled_samples} of {args.steps} samples run uncompiled "
              f"(the compiled call covers {SEGMENT_SAMPLES})")
    print(f"output         {out_arg} (about {fmt_bytes(expected_bytes)})")

    warmup_s = None
    if not args.no_warmup:
        # Compiles the init and (T >= 12) the segment at a size that takes the same
        # graphs as the big run (dim 0 is dynamic; the init is compiled above 2**16).
        t0 = time.perf_counter()
        fastneuron.train(**fastneuron.grid(seeds=range(2**17 // n_lrs + 1), lrs=lrs), steps=args.steps,
                         backend=args.backend, device="cpu", log_every=args.log_every, progress=False)
        warmup_s = time.perf_counter() - t0
        print(f"warm-up        {warmup_s:.2f} s (~2**17 members, in memory: compiles the kernels)")

    members = fastneuron.grid(seeds=range(n_seeds), lrs=lrs)  # a description: O(n_seeds + n_lrs) at most
    sampler.start("train")
    t0 = time.perf_counter()
    result = fastneuron.train(**members, steps=args.steps, backend=args.backend, device="cpu", out=out_arg,
                              member_block=args.member_block, log_every=args.log_every, progress=args.progress)
    train_s = time.perf_counter() - t0
    sampler.stop("train")
    timing = last_run_timing()
    maxrss_train = ru_maxrss_bytes()
    del result  # the lazily loaded result train() returns; reopened below with fastneuron.load
    disk = disk_usage(out)
    rate = m * args.steps / train_s
    print(f"train          {train_s:.2f} s, {rate:.3g} member-steps/s"
          + (f" (start-up {timing.start_up_s:.2f} s, rest {timing.train_s:.2f} s)" if timing and
             timing.start_up_s is not None else ""))
    print(f"on disk        {fmt_bytes(disk['bytes'])} in {disk['files']} files, "
          f"{disk['bytes'] / m:.2f} bytes a member (expected {expected_bytes / m:.0f} + manifest, checkpoint)")

    sampler.start("load")
    t0 = time.perf_counter()
    loaded = fastneuron.load(out_arg)
    load_s = time.perf_counter() - t0
    sampler.stop("load")
    n_loaded = len(loaded)
    sampler.start("summary")
    t0 = time.perf_counter()
    summary = loaded.summary()
    summary_s = time.perf_counter() - t0
    sampler.stop("summary")
    maxrss_end = ru_maxrss_bytes()
    print(f"load           {load_s:.3f} s, len {n_loaded:,}")
    print(f"summary        {summary_s:.2f} s")
    print(summary)
    del loaded

    indices = sorted({0, min(1, m - 1), m // 2, m - 1})
    sampler.start("checks")
    checks = check_members(out, indices, n_lrs, lrs, args)
    sampler.stop("checks")
    for c in checks:
        print(f"member {c['member']:,} (seed {c['seed']}, lr {c['lr']:g}) alone, eager: "
              + ("equal" if c["equal"] else f"DIFFERS in {', '.join(c['differs'])}"))

    time.sleep(2 * args.sample_interval)  # the last samples in
    peaks = sampler.peaks()
    train_peak = peaks.get("train", {}).get("peak_anon_bytes")
    summary_peak = peaks.get("summary", {}).get("peak_anon_bytes")
    print(f"peak memory    anon {fmt_bytes(train_peak)} while training, {fmt_bytes(summary_peak)} in summary(); "
          f"ru_maxrss {fmt_bytes(maxrss_train)} after training, {fmt_bytes(maxrss_end)} at the end")

    problems = []
    if train_peak is None or summary_peak is None:
        problems.append("no memory samples")
    elif max(train_peak, summary_peak) > LIMIT_BYTES:
        problems.append(f"peak anonymous memory {fmt_bytes(max(train_peak, summary_peak))} exceeds "
                        f"{fmt_bytes(LIMIT_BYTES)}")
    if n_loaded != m:
        problems.append(f"fastneuron.load gives {n_loaded} members, not {m}")
    if not all(c["equal"] for c in checks):
        problems.append("members differ from their eager runs: "
                        + ", ".join(str(c["member"]) for c in checks if not c["equal"]))

    row = {
        "bench": "members_1e9", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": cpu_name(), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "mem_total_bytes": mem_total_bytes(), "load_average_at_start": load_avg,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "triton": version_of("triton"), "numpy": np.__version__, "fastneuron": fastneuron.__version__},
        "commit": git_commit(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "members": m, "seeds": n_seeds, "lrs": lrs, "steps": args.steps, "log_every": args.log_every,
        "logged_rows": n_logged, "backend": args.backend, "member_block": args.member_block,
        "blocks": math.ceil(m / args.member_block), "compiled_samples_per_member": compiled_samples,
        "timing": {"warmup_s": warmup_s, "train_s": train_s,
                   "start_up_s": getattr(timing, "start_up_s", None),
                   "after_first_chunk_s": getattr(timing, "train_s", None),
                   "rate_after_first_chunk": getattr(timing, "rate", None),
                   "load_s": load_s, "summary_s": summary_s},
        "member_steps_per_s": rate,
        "memory": {"limit_bytes": LIMIT_BYTES, "train_peak_anon_bytes": train_peak,
                   "summary_peak_anon_bytes": summary_peak, "ru_maxrss_bytes_after_train": maxrss_train,
                   "ru_maxrss_bytes_at_end": maxrss_end, "sample_interval_s": args.sample_interval,
                   "phases": peaks},
        "disk": {**disk, "expected_bytes_without_metadata": expected_bytes, "bytes_per_member": disk["bytes"] / m,
                 "write_bytes_per_s": disk["bytes"] / train_s},
        "summary": {"by": jsonable(getattr(summary, "by", None)), "rows": jsonable(getattr(summary, "rows", None))},
        "checks": checks, "ok": not problems, "problems": problems,
    }
    results = Path(args.results)
    write_results(results, row)
    print(f"results        {results} and {results.with_suffix('.md')}")
    if problems:
        print("members_1e9: FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

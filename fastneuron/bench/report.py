"""The results of ``python -m fastneuron.bench``: one row per (contestant, M), the report
around them (ratios, headline, machine, versions), and the report as a text table,
CSV and plot."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

from ..machine import cpu_fields, usable_cores
from .contestants import Contestant
from .measure import Timing, format_load_warning

# --- rows and report ------------------------------------------------------------------


def make_row(contestant: Contestant, members: int, steps: int, timing: Timing, *, interpret: bool) -> dict:
    """One (contestant, M, T) row; ``build_report`` fills in device, ratio and versions."""
    import numpy as np

    rates = members * steps / np.asarray(timing.run_s)
    median_s = float(np.median(timing.run_s))
    smoke = contestant.key.startswith("triton") and interpret
    return {
        "contestant": contestant.name,
        "peer": contestant.peer,
        "comparable": not smoke,
        "device": None,  # filled in by build_report
        "device_name": None,
        "members": members,
        "steps": steps,
        "inputs": contestant.inputs,
        # M * d * T / time: each of a neuron's d weights updated once a step (SPEC §6)
        "parameter_steps_per_s": {
            "median": float(np.median(rates)) * contestant.inputs,
            "p20": float(np.percentile(rates, 20)) * contestant.inputs,
            "p80": float(np.percentile(rates, 80)) * contestant.inputs,
        },
        "repeats": len(timing.run_s),
        "neuron_steps_per_s": {
            "median": float(np.median(rates)),
            "p20": float(np.percentile(rates, 20)),
            "p80": float(np.percentile(rates, 80)),
        },
        "ratio": None,
        "ratio_to": None,
        "warmup_s": timing.warmup_s,
        # The first call's extra time over a steady one, for the contestants that compile
        # (torch.compile, jax.jit, Triton; None for the others): the compile and first-touch
        # costs. A cold compile only with --cold-cache. The interpreter compiles nothing.
        "compile_s": max(0.0, timing.warmup_s - median_s) if contestant.compiles and not smoke else None,
        "peak_mem_bytes": timing.peak_mem_bytes,
        "peak_mem_method": timing.peak_mem_method,
        "note": "TRITON_INTERPRET=1 smoke run: not comparable" if smoke else contestant.note,
    }


def build_report(rows: list, skipped: list, failed: list, device: str, args) -> dict:
    """The whole report (what --json writes); completes ``rows`` in place."""
    machine = _machine(device)
    versions = _versions()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    device_name = machine["gpu"] if device == "cuda" else machine["cpu"]
    for row in rows:
        row.update(device=device, device_name=device_name, versions=versions, date=date,
                   cold_cache=args.cold_cache)
    fastest_peer = max((r for r in rows if r["peer"] and r["comparable"]),
                       key=lambda r: r["neuron_steps_per_s"]["median"], default=None)
    if fastest_peer:
        for row in rows:
            if row["comparable"]:
                row["ratio"] = row["neuron_steps_per_s"]["median"] / fastest_peer["neuron_steps_per_s"]["median"]
                row["ratio_to"] = _row_label(fastest_peer)
    return {
        "device": device,
        "device_name": device_name,
        "rows": rows,
        "headline": _headline(rows),
        "skipped": skipped,
        "failed": failed,
        "machine": machine,
        "versions": versions,
        "date": date,
        "settings": {"quick": args.quick, "repeats": args.repeats, "cold_cache": args.cold_cache,
                     "interpret": args.interpret},
    }


def _headline(rows: list) -> list:
    """Each fastneuron contestant's fastest row against each peer's fastest row."""
    def best_by_contestant(peer: bool) -> dict:
        best = {}
        for r in rows:
            if r["peer"] == peer and r["comparable"]:
                name = r["contestant"]
                if name not in best or r["neuron_steps_per_s"]["median"] > best[name]["neuron_steps_per_s"]["median"]:
                    best[name] = r
        return best

    peers = best_by_contestant(True)
    lines = []
    for row in best_by_contestant(False).values():
        rate = row["neuron_steps_per_s"]["median"]
        lines.append({
            "contestant": row["contestant"], "members": row["members"], "steps": row["steps"],
            "neuron_steps_per_s": rate,
            "times_peer": {name: {"ratio": rate / p["neuron_steps_per_s"]["median"], "members": p["members"],
                                  "steps": p["steps"]} for name, p in peers.items()},
        })
    return lines


def _row_label(row: dict) -> str:
    return f"{row['contestant']} (M={format_members(row['members'])}, T={row['steps']})"


# --- machine and versions -------------------------------------------------------------


#: The vector extensions named in a report, widest first (x86 /proc/cpuinfo flags).
_ISA_FLAGS = ("avx512f", "avx2", "avx", "sse4_2")


def cpu_info(text: Optional[str] = None) -> dict:
    """The CPU's kind from ``/proc/cpuinfo`` (or ``text``): ``vendor``, ``family``,
    ``model``, ``stepping`` (integers, as the kernel prints them) and ``isa``, the widest
    of :data:`_ISA_FLAGS` it has; None for what cannot be read. A model name such as
    "AMD EPYC" does not tell the generations apart, and they differ several-fold in
    throughput (the README's family 23 against Zen 5); the family and model do."""
    info = {"model_name": None, "vendor": None, "family": None, "model": None, "stepping": None, "isa": None}
    keys = {"model name": "model_name", "vendor_id": "vendor", "cpu family": "family", "model": "model",
            "stepping": "stepping"}
    for key, value in cpu_fields(text).items():
        if key in keys:
            info[keys[key]] = int(value) if keys[key] in ("family", "model", "stepping") and value.isdigit() \
                else value
        elif key == "flags":
            flags = set(value.split())
            info["isa"] = next((f for f in _ISA_FLAGS if f in flags), None)
    return info


def cpu_kind(info: Optional[dict] = None) -> str:
    """ "AMD EPYC (cpu family 25, model 17)": :func:`cpu_info`'s model name, family and model,
    for a bench script's header line."""
    info = cpu_info() if info is None else info
    return f"{info['model_name'] or platform.processor() or '?'} (cpu family {info['family']}, model {info['model']})"


def _machine(device: str) -> dict:
    import torch

    info = cpu_info()
    cpu = info["model_name"] or platform.processor() or platform.machine()
    try:  # what torch's CPU kernels use (ATEN_CPU_CAPABILITY may lower it)
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    usable = usable_cores()
    return {
        "cpu": cpu,
        "cpu_vendor": info["vendor"],
        "cpu_family": info["family"],
        "cpu_model": info["model"],
        "cpu_stepping": info["stepping"],
        "cpu_isa": info["isa"],
        "torch_cpu_capability": capability,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "platform": platform.platform(),
    }


def _versions() -> dict:
    import fastneuron

    versions = {"python": platform.python_version(), "fastneuron": fastneuron.__version__}
    for module in ("torch", "triton", "jax", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    versions["fastneuron_commit"] = _git_commit()
    return versions


def _git_commit() -> Optional[str]:
    """The checkout's commit (with '+dirty' for local changes), when run from one."""
    root = Path(__file__).resolve().parents[2]  # fastneuron/bench/report.py -> the checkout
    if not ((root / ".git").exists() and (root / "pyproject.toml").exists()):
        return None  # an installed copy: whatever repository encloses it is not fastneuron's
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


# --- text table, CSV, plot ------------------------------------------------------------

_COLUMNS = [  # (header, width, formatter of a row)
    ("contestant", 19, lambda r: r["contestant"]),
    ("M", 7, lambda r: format_members(r["members"])),
    ("T", 5, lambda r: str(r["steps"])),
    ("median/s", 9, lambda r: format_rate(r["neuron_steps_per_s"]["median"])),
    ("p20/s", 8, lambda r: format_rate(r["neuron_steps_per_s"]["p20"])),
    ("p80/s", 8, lambda r: format_rate(r["neuron_steps_per_s"]["p80"])),
    ("ratio", 8, lambda r: "-" if r["ratio"] is None else _format_ratio(r["ratio"])),
    ("d", 2, lambda r: str(r.get("inputs", 1))),
    ("param/s", 9, lambda r: format_rate(r["parameter_steps_per_s"]["median"]) if "parameter_steps_per_s" in r
     else "-"),
    ("warm-up s", 9, lambda r: f"{r['warmup_s']:.2f}"),
    ("compile s", 9, lambda r: "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}"),
    ("peak mem", 9, lambda r: _format_bytes(r["peak_mem_bytes"])),
]


def format_report(report: dict) -> str:
    """The report as printed: the table, its legend and notes, headline, machine."""
    rows, machine, versions = report["rows"], report["machine"], report["versions"]
    lines = [f"fastneuron.bench on {report['device']} ({report['device_name']}): neuron-steps per second, "
             f"median and 20th/80th percentiles of {report['settings']['repeats']} timed runs after a warm-up"]
    lines += [format_load_warning(w, explain=i == 0)
              for i, w in enumerate((report.get("load") or {}).get("warnings", []))]
    lines.append("")
    # Each column as wide as its header and its widest cell (names like "fastneuron compile
    # rmsprop" exceed the default width).
    widths = [max([w, len(h)] + [len(f(row)) for row in rows]) for h, w, f in _COLUMNS]
    lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, ((h, _, _), w) in enumerate(zip(_COLUMNS, widths))))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(f(row).rjust(w) if i else f(row).ljust(w)
                               for i, ((_, _, f), w) in enumerate(zip(_COLUMNS, widths))))
    lines.append("")
    ratio_to = next((r["ratio_to"] for r in rows if r["ratio_to"]), None)
    lines.append(f"ratio: median over the fastest peer row, {ratio_to or 'none measured'}; "
                 "peers: tutorial, torch.func, torch eager, jax scan.")
    lines.append("M: members trained at once (tutorial: neurons trained one after another); T: steps.")
    cache = (" (fresh cache: a cold compile)." if report["settings"]["cold_cache"]
             else " (Inductor's on-disk cache may be warm; --cold-cache for a cold compile).")
    lines.append("warm-up s: the first call (includes torch.compile / jax.jit / Triton's compile); compile s, "
                 "for the contestants that compile (- for the others): warm-up minus the median run" + cache)
    methods = sorted({r["peak_mem_method"] for r in rows})
    lines.append("peak mem: what the set-up keeps (inputs) plus the peak of one more steady run above it "
                 f"({', '.join(methods) or '-'}).")
    notes = {row["contestant"]: row["note"] for row in rows if row["note"]}
    lines += [f"  {name}: {note}" for name, note in notes.items()]
    if report["headline"]:
        lines.append("")
        for item in report["headline"]:
            against = ", ".join(f"{_format_ratio(v['ratio'])} {name} (M={format_members(v['members'])}, "
                                f"T={v['steps']})" for name, v in item["times_peer"].items())
            lines.append(f"{item['contestant']} at its best (M={format_members(item['members'])}, T={item['steps']}): "
                         f"{format_rate(item['neuron_steps_per_s'])} neuron-steps/s = {against or 'no peer measured'}")
    for kind in ("skipped", "failed"):
        for item in report[kind]:
            where = f" (M={format_members(item['members'])}, T={item['steps']})" if "members" in item else ""
            lines.append(f"{kind}: {item['contestant']}{where}: {item['reason']}")
    lines.append("")
    lines.append(f"machine: {machine['cpu']}{_format_cpu_kind(machine)}, {machine['cores']} cores "
                 f"({machine['cores_usable']} usable, "
                 f"torch uses {machine['torch_threads']} threads)"
                 + (f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU used"))
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    load = report.get("load")
    if load and load.get("start"):
        end = f", at the end {_format_load(load['end'])}" if load.get("end") else ""
        lines.append(f"load average (1, 5, 15 min): at start {_format_load(load['start'])}{end}; "
                     f"{load['cores_usable']} usable cores")
    lines.append(f"date: {report['date']}")
    return "\n".join(lines)


def write_csv(path: str, rows: list) -> None:
    """The rows, flattened: neuron_steps_per_s_{median,p20,p80}, parameter_steps_per_s_{...} and
    version_{library}."""
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k not in ("neuron_steps_per_s", "parameter_steps_per_s", "versions")}
        for key in ("neuron_steps_per_s", "parameter_steps_per_s"):
            for stat, value in row.get(key, {}).items():
                out[f"{key}_{stat}"] = value
        for lib, version in row["versions"].items():
            out[f"version_{lib}"] = version
        flat.append(out)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["contestant"])
        writer.writeheader()
        writer.writerows(flat)


def plot(path: str, rows: list) -> None:
    """Throughput against M, log-log, one line per contestant, p20-p80 as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["contestant"] for r in rows):
        mine = sorted((r for r in rows if r["contestant"] == name), key=lambda r: r["members"])
        m = [r["members"] for r in mine]
        med = [r["neuron_steps_per_s"]["median"] for r in mine]
        spread = [[a - r["neuron_steps_per_s"]["p20"] for a, r in zip(med, mine)],
                  [r["neuron_steps_per_s"]["p80"] - a for a, r in zip(med, mine)]]
        steps = ", ".join(map(str, sorted({r["steps"] for r in mine})))
        if all(r["comparable"] for r in mine):
            ax.errorbar(m, med, yerr=spread, marker="o", capsize=3, label=f"{name} (T={steps})")
        else:
            ax.errorbar(m, med, yerr=spread, marker="x", capsize=3, linestyle=":", color="grey",
                        label=f"{name} (T={steps}; interpreter smoke run, not comparable)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("members M")
    ax.set_ylabel("neuron-steps / s (median, p20-p80)")
    device = rows[0]["device_name"] if rows else ""
    ax.set_title(f"fastneuron.bench: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- number formats -------------------------------------------------------------------


def format_members(m: int) -> str:
    """2**k for powers of two from 1024 on, else the number."""
    if m >= 1024 and m & (m - 1) == 0:
        return f"2**{m.bit_length() - 1}"
    return str(m)


def format_rate(x: float) -> str:
    return f"{x:.2e}".replace("e+0", "e").replace("e+", "e")


def _format_ratio(x: float) -> str:
    return f"{x:.3g}x" if x < 1000 else f"{x:.2e}x".replace("e+0", "e").replace("e+", "e")


def _format_cpu_kind(machine: dict) -> str:
    """" (cpu family 23 model 1, avx2; torch's CPU capability AVX2)", or what of it is known."""
    kind = [f"{name} {machine[key]}" for name, key in (("cpu family", "cpu_family"), ("model", "cpu_model"))
            if machine.get(key) is not None]
    if machine.get("cpu_isa"):
        kind.append(machine["cpu_isa"])
    text = ", ".join(kind)
    if machine.get("torch_cpu_capability"):
        text += ("; " if text else "") + f"torch's CPU capability {machine['torch_cpu_capability']}"
    return f" ({text})" if text else ""


def _format_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def _format_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    if abs(n) < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.0f} MiB"

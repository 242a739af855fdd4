"""docs/API.md stays true to the code (issue 22 item 7): each documented function's
signature line, as the code gives it, and every command-line flag.

When a signature changes, this test fails with the line API.md should hold
(``python tests/test_api_doc.py`` prints them all); update the text around it too."""

from __future__ import annotations

import argparse
import inspect
import pathlib
import sys

import pytest

API = pathlib.Path(__file__).resolve().parents[1] / "docs" / "API.md"


def documented() -> list:
    """(name as API.md writes it, the object) for every function API.md gives a signature of."""
    import fastneuron
    from fastneuron import plot, progress, theory
    from fastneuron.parts import PartsResult
    from fastneuron.result import TrainResult
    from fastneuron.summary import Summary

    items = [(f"fastneuron.{n}", getattr(fastneuron, n)) for n in ("train", "grid", "load", "make_schedule",
                                                                  "population_risk")]
    items += [(f"TrainResult.{n}", getattr(TrainResult, n)) for n in ("member", "summary", "save", "to_pandas",
                                                                     "to_xarray", "to_parquet")]
    items += [(f"PartsResult.{n}", getattr(PartsResult, n)) for n in ("part", "iter_parts", "to_result", "summary")]
    items += [(f"Summary.{n}", getattr(Summary, n)) for n in ("to_dataframe", "to_xarray")]
    items += [(f"theory.{n}", getattr(theory, n)) for n in (
        "mean_edge", "mean_square_edge", "almost_sure_edge", "edges", "lyapunov", "stationary", "moments_at",
        "predicted_spread", "std_with_se", "plain_sgd", "problem_of", "x_moments", "expected_A", "expected_AA")]
    items.append(("theory.SGDProblem.make", theory.SGDProblem.make))
    items += [(f"plot.{n}", getattr(plot, n)) for n in ("risk_vs_lr", "risk_vs_step", "trajectories", "spread_vs_lr",
                                                        "draw_edges")]
    items.append(("fastneuron.progress.last_run_timing", progress.last_run_timing))
    return items


def signature_line(name: str, obj) -> str:
    """``name(params)`` without annotations, ``self`` or the return type."""
    sig = inspect.signature(obj)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values() if p.name != "self"]
    return name + str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _flags(parser: argparse.ArgumentParser) -> set:
    return {s for action in parser._actions for s in action.option_strings
            if s.startswith("--") and s != "--help" and action.help != argparse.SUPPRESS}


def cli_flags() -> dict:
    """Every long option of ``fastneuron``, ``fastneuron train`` and ``python -m fastneuron.bench``."""
    from fastneuron import __main__ as cli
    from fastneuron.bench import cli as bench_cli

    top = cli.build_parser(with_bench=True)
    train = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    bench = []

    def capture(self, args=None, namespace=None):
        bench.append(self)
        raise SystemExit(0)

    real = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            bench_cli._parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = real
    return {"fastneuron": _flags(top), "fastneuron train": _flags(train), "fastneuron.bench": _flags(bench[0])}


def test_every_signature_is_in_api_md():
    text = API.read_text()
    missing = [line for line in (signature_line(n, o) for n, o in documented()) if line not in text]
    assert not missing, "docs/API.md lacks (or has an old form of) these signature lines:\n" + "\n".join(missing)


def test_every_train_parameter_is_explained():
    """Each of train()'s parameters has its own entry (`name`), not only its place in the signature."""
    import fastneuron

    text = API.read_text()
    section = text.split("## fastneuron.train", 1)[1].split("\n## ", 1)[0]
    names = [p for p in inspect.signature(fastneuron.train).parameters if p != "options"]
    assert not [n for n in names if f"`{n}`" not in section], names


def test_every_command_line_flag_is_in_api_md():
    text = API.read_text()
    missing = {cmd: sorted(f for f in flags if f"`{f}" not in text) for cmd, flags in cli_flags().items()}
    assert not any(missing.values()), missing


if __name__ == "__main__":
    for n, o in documented():
        print(signature_line(n, o))
    sys.exit(0)

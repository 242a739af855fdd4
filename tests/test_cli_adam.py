"""The command line's optimizers: ``--optimizer adam|adamw|rmsprop`` with their flags
reach train() unchanged (the saved result equals the API's bit for bit), and a flag of
another optimizer, or a bad value, is one line naming the flag."""

from __future__ import annotations

import numpy as np
import pytest
from compare import assert_same_results

import fastneuron
from fastneuron import __main__ as cli


def _run(tmp_path, capsys, *args):
    out = tmp_path / "r.npz"
    rc = cli.main(["train", "--seeds", "0:3", "--steps", "30", "--backend", "eager", "--quiet", "--out", str(out),
                   *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return fastneuron.load(out), captured.out


def test_adam_flags_reach_train(tmp_path, capsys):
    got, stdout = _run(tmp_path, capsys, "--optimizer", "adam", "--lrs", "0.01,0.3,1e20", "--betas", "0.8,0.99",
                       "--eps", "1e-6", "--amsgrad", "--weight-decay", "0,0.01")
    want = fastneuron.train(**fastneuron.grid([0, 1, 2], [0.01, 0.3, 1e20], weight_decay=[0.0, 0.01]), steps=30,
                            optimizer="adam", betas=(0.8, 0.99), eps=1e-6, amsgrad=True, backend="eager",
                            progress=False)
    assert_same_results(want, got, members=True)
    assert got.settings == want.settings and got.settings["beta1"] == 0.8 and got.settings["amsgrad"] is True
    assert (got.diverged_at >= 0).any()
    assert "members        18 (3 seeds x 3 lrs x 2 weight decays)" in stdout


def test_adamw_default_weight_decay_is_torchs(tmp_path, capsys):
    got, _ = _run(tmp_path, capsys, "--optimizer", "adamw")
    assert got.weight_decay.tolist() == [float(np.float32(0.01))] * 3
    want = fastneuron.train([0, 1, 2], 0.01, 30, optimizer="adamw", backend="eager", progress=False)
    assert_same_results(want, got, members=True)


def test_rmsprop_flags_reach_train(tmp_path, capsys):
    got, _ = _run(tmp_path, capsys, "--optimizer", "rmsprop", "--alpha", "0.9", "--eps", "1e-7", "--momentum", "0.5",
                  "--centered", "--batch-size", "3")
    want = fastneuron.train([0, 1, 2], 0.01, 30, optimizer="rmsprop", alpha=0.9, eps=1e-7, momentum=0.5,
                            centered=True, batch_size=3, backend="eager", progress=False)
    assert_same_results(want, got, members=True)
    assert got.settings["momentum"] == 0.5 and got.settings["centered"] is True


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "adam", "--momentum", "0.9"],
     "--momentum is an option of sgd and rmsprop, not of --optimizer adam"),
    (["--optimizer", "adamw", "--nesterov"], "--nesterov is an option of sgd, not of --optimizer adamw"),
    (["--optimizer", "rmsprop", "--betas", "0.9,0.99"], "--betas is an option of adam and adamw"),
    (["--betas", "0.9,0.99"], "--betas is an option of adam and adamw, not of --optimizer sgd"),
    (["--eps", "1e-8"], "--eps is an option of adam and adamw and rmsprop, not of --optimizer sgd"),
    (["--optimizer", "adam", "--centered"], "--centered is an option of rmsprop"),
    (["--optimizer", "rmsprop", "--amsgrad"], "--amsgrad is an option of adam and adamw"),
    (["--optimizer", "sgd", "--alpha", "0.9"], "--alpha is an option of rmsprop"),
    (["--optimizer", "adam", "--betas", "0.9"], "--betas: expected two numbers B1,B2"),
    (["--optimizer", "adam", "--betas", "0.9,x"], "--betas: 'x' is not a number"),
    (["--optimizer", "adam", "--betas", "0.9,1"], "--betas item 2 must be in [0, 1), got 1.0"),
    (["--optimizer", "adam", "--eps", "-1"], "--eps must be finite and in [0.0, inf)"),
    (["--optimizer", "adam", "--eps", "1e-8,1e-6"], "--eps: '1e-8,1e-6' is a list; this option takes one value"),
    (["--optimizer", "rmsprop", "--alpha", "1"], "--alpha must be finite and in [0.0, 1.0)"),
    (["--optimizer", "rmsprop", "--momentum", "0,0.9"], "--momentum: '0,0.9' is a list"),
    (["--optimizer", "rmsprop", "--momentum", "-1"], "--momentum must be >= 0"),
    (["--optimizer", "adamw", "--weight-decay", "-1"], "--weight-decay must be finite"),
    (["--optimizer", "lion"], "--optimizer must be one of 'sgd', 'adam', 'adamw', 'rmsprop'"),
])
def test_bad_flags_are_one_line_naming_the_flag(args, message, capsys):
    rc = cli.main(["train", "--seeds", "0", "--steps", "2", "--backend", "eager", "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("fastneuron: error: "), err
    assert message in err, err


def test_help_names_the_optimizers(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--betas", "--eps", "--amsgrad", "--alpha", "--centered", "adamw", "rmsprop"):
        assert flag in out

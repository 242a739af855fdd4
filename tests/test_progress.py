"""The progress bar: on stderr, steps and neuron-steps/s, whole steps across member blocks."""

import pytest

import fastneuron as fn
from fastneuron import progress


@pytest.fixture
def no_delay(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_DELAY_S", 0.0)


def final_line(err: str) -> str:
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]


@pytest.mark.parametrize("block", [None, 3])
def test_bar_shows_steps_and_rate_on_stderr(no_delay, capsys, block):
    fn.train(range(10), 0.01, 40, backend="eager", progress=True, member_block=block)
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays free for data
    last = final_line(err)
    assert "40/40" in last, last  # whole steps, also when 10 members go in blocks of 3
    assert "neuron-steps/s" in last and "10 members" in last, last


def test_no_bar_when_off_or_short(capsys):
    fn.train(range(10), 0.01, 40, backend="eager", progress=False)
    assert capsys.readouterr().err == ""
    fn.train(range(10), 0.01, 40, backend="eager", progress=True)  # shorter than the 2 s delay
    assert capsys.readouterr().err == ""

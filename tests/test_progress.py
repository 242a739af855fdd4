"""The progress bar: on stderr, steps and neuron-steps/s, whole steps across member blocks."""

import types

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


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_rate_and_eta_start_after_the_first_chunk(monkeypatch, capsys):
    """Issue 13 item 9: a 1-member run showed an ETA of 3 h 23 min, its first chunk's
    compilation counted as training. The first chunk is start-up, shown apart."""
    clock = FakeClock()
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=clock))
    bar = progress.Progress(True, 100, 10)
    bar.bar._time = clock
    bar.bar.start_t = bar.bar.last_print_t = clock.t
    clock.t += 60.0  # compilation: the first chunk of 4 steps takes a minute
    bar.update(4, 10)
    for _ in range(5):  # then 4 steps a second
        clock.t += 1.0
        bar.update(4, 10)
    fmt = bar.bar.format_dict
    assert fmt["n"] == 24
    assert fmt["elapsed"] == pytest.approx(5.0)
    assert fmt["rate"] == pytest.approx(4.0)  # steps/s, so the ETA is (100 - 24) / 4 = 19 s
    assert "40 neuron-steps/s" in fmt["postfix"] and "start-up 60" in fmt["postfix"], fmt["postfix"]
    timing = progress.last_run_timing()
    assert timing.start_up_s == pytest.approx(60.0) and timing.train_s == pytest.approx(5.0)
    assert timing.first_chunk_neuron_steps == 40 and timing.neuron_steps == 240
    assert timing.rate == pytest.approx(40.0)
    bar.close()
    assert timing.finished
    assert "19" in final_line(capsys.readouterr().err)  # the ETA, 00:19


def test_last_run_timing_of_train():
    fn.train(range(3), 0.01, 40, backend="eager", progress=False)
    timing = progress.last_run_timing()
    assert timing.finished and timing.neuron_steps == 3 * 40
    assert timing.first_chunk_neuron_steps == 3 * 4  # eager's chunk: 4 steps
    assert timing.start_up_s > 0 and timing.train_s > 0

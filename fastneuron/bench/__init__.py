"""``python -m fastneuron.bench``: fastneuron against other ways to train the tutorial's neuron.

Every contestant trains M neurons (a=2, c=1, x ~ U[1, 5), learning rates swept over
[1e-3, 2e-2]) for T steps of per-sample SGD; see ``contestants.py``. Each
(contestant, M) is run once to warm up (that run includes torch.compile, jax.jit or
Triton's compile; "compile s" is shown only for the contestants that compile) and then
timed ``--repeats`` times. Progress goes to stderr: each phase of a row, and a "still
running" line every 10 s of a long call; a warning (there and in the report) when the
1-minute load average is above the usable cores, at start or when it rises during the run.
Throughput is neuron-steps per second (M * T / seconds): a rate, so the slow contestants run fewer members or steps than
the fast ones, and every row says which M and T it used.

The jobs live in their own modules: ``cli`` (arguments and the run loop),
``measure`` (sizes, plan, timing and the memory probe), ``report`` (rows, the
report, its table, CSV and plot) and ``contestants``.
"""

from .cli import main

__all__ = ["main"]

"""``python -m fastneuron.bench``: fastneuron against other ways to train the tutorial's neuron.

Every contestant trains M neurons (a=2, c=1, x ~ U[1, 5), learning rates swept over
[1e-3, 2e-2]) for T steps of per-sample SGD; see ``contestants.py``. Each
(contestant, M) is run once to warm up (that run includes torch.compile or jax.jit)
and then timed ``--repeats`` times. Throughput is neuron-steps per second
(M * T / seconds): a rate, so the slow contestants run fewer members or steps than
the fast ones, and every row says which M and T it used.

The jobs live in their own modules: ``cli`` (arguments and the run loop),
``measure`` (sizes, plan, timing and the memory probe), ``report`` (rows, the
report, its table, CSV and plot) and ``contestants``.
"""

from .cli import main

__all__ = ["main"]

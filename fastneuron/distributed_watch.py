"""Heartbeats of a distributed run's ranks in the process group's key-value store
(see :mod:`fastneuron.distributed`): each rank beats a counter every second from a
background thread, which also watches its peers while the rank trains; "done" reports
and rank 0's verdict go through the same store. A peer whose heartbeat stops, or a
store that stops answering, is a :class:`DistributedError` naming it.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import Optional

#: Seconds without a heartbeat after which a peer counts as dead (environment variable).
PEER_TIMEOUT_ENV = "FASTNEURON_DIST_PEER_TIMEOUT"
HEARTBEAT_SECONDS = 1.0
#: Default of ``FASTNEURON_DIST_PEER_TIMEOUT``: with CHECK_SECONDS and a chunk of steps,
#: a run ends well within 30 s of losing a peer or the store.
PEER_TIMEOUT_SECONDS = 20.0
#: Seconds between two looks at the peers while a rank trains (in the heartbeat thread).
CHECK_SECONDS = 2.0
#: At most this many seconds rank 0 waits for the other ranks to read its failing verdict.
ABANDON_SECONDS = CHECK_SECONDS + 2 * HEARTBEAT_SECONDS + 4.0
_calls = itertools.count()


class DistributedError(RuntimeError):
    """A distributed run failed on some rank, or lost a rank."""

    __module__ = "fastneuron.distributed"  # its public home, in messages and tracebacks


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0 seconds, got {text!r}")
    return value


class _Watch:
    """Heartbeats, the look at the peers while training, and the ranks' reports, in the
    group's key-value store."""

    def __init__(self, store, rank: int, world: int):
        import torch.distributed as dist

        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.store = dist.PrefixStore(f"fastneuron/attempt{attempt}/run{next(_calls)}/", store)
        self.rank, self.world = rank, world
        self.peer_timeout = _seconds(PEER_TIMEOUT_ENV, PEER_TIMEOUT_SECONDS)
        self.training = False  # while True, the heartbeat thread also looks at the peers
        self._failure: Optional[str] = None  # what the heartbeat thread found wrong, once
        self._seen: dict = {}  # the heartbeat thread's: peer -> (heartbeat count, when it last changed)
        self._reported: set = set()  # rank 0: the peers that reported "done"
        self.gone: set = set()  # rank 0: the peers that died, failed, or were given other arguments
        self._stop = threading.Event()
        self._call("starting", self._beat)  # the store may already be gone with a dead rank 0
        self._last_answer = time.monotonic()
        self._thread = threading.Thread(target=self._beating, name="fastneuron-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self.store.add(f"hb{self.rank}", 1)

    def _beating(self) -> None:
        next_look = time.monotonic() + CHECK_SECONDS
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
                self._last_answer = time.monotonic()
                if self.training and self._failure is None and time.monotonic() >= next_look:
                    self._look()
                    next_look = time.monotonic() + CHECK_SECONDS
            except Exception as exc:  # the store is gone: the main thread says so at its next check
                if self._failure is None:
                    self._failure = self._lost_store("training its shard", exc)
                return

    def _look(self) -> None:
        """In the heartbeat thread: record the first failure of a peer seen while training."""
        if self.rank == 0:
            for p in range(1, self.world):
                if p in self._reported:
                    continue
                if self.store.check([f"done{p}"]):
                    report = json.loads(self.store.get(f"done{p}").decode())
                    if not report["ok"]:
                        self.gone.add(p)
                        self._failure = f"fastneuron: rank {p} of {self.world} failed: {report['error']}"
                        return
                    self._reported.add(p)
                    continue
                self._failure = self._stale(self._seen, p, "training its shard")
                if self._failure:
                    return
        else:
            if self.store.check(["verdict"]):  # while this rank trains, only a failure
                verdict = json.loads(self.store.get("verdict").decode())
                if not verdict["ok"]:
                    self.store.add("abandoned", 1)  # read: rank 0 may end now
                    self._failure = f"fastneuron: rank 0 abandoned the run: {verdict['error']}"
                    return
            self._failure = self._stale(self._seen, 0, "training its shard")

    def _stale(self, seen: dict, peer: int, what: str) -> Optional[str]:
        """The message for ``peer`` if its heartbeat has not moved for the peer timeout
        (``seen``: peer -> (heartbeat count, when it last changed), updated here)."""
        beats, now = self.store.add(f"hb{peer}", 0), time.monotonic()
        if peer not in seen or seen[peer][0] != beats:
            seen[peer] = (beats, now)
        elif now - seen[peer][1] > self.peer_timeout:
            self.gone.add(peer)
            return (f"fastneuron: rank {peer} of {self.world} stopped: no heartbeat for {self.peer_timeout:g} s "
                    f"while rank {self.rank} was {what} (its process died, or its machine is gone; "
                    f"{PEER_TIMEOUT_ENV} sets the limit). The run is abandoned.")
        return None

    def check(self) -> None:
        """Between chunks of steps: DistributedError if a peer or the store was lost (no store call)."""
        if self._failure is not None:
            raise DistributedError(self._failure)
        quiet = time.monotonic() - self._last_answer
        if quiet > self.peer_timeout:
            self._failure = self._lost_store(
                "training its shard", f"no answer for {quiet:.0f} s ({PEER_TIMEOUT_ENV} sets the limit)")
            raise DistributedError(self._failure)

    def stop(self) -> None:
        # Joined, so that the thread is never inside a store call when the process exits.
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _lost_store(self, what: str, exc) -> str:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line, no C++ trace
        return (f"fastneuron: rank {self.rank} of {self.world} lost contact with the run's key-value store "
                f"while {what} (it lives with rank 0 or with torchrun's agent: did that process die?): {reason}")

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except DistributedError:
            raise
        except Exception as exc:
            raise DistributedError(self._lost_store(what, exc)) from None

    def post(self, key: str, message: dict) -> None:
        self._call("reporting", self.store.set, key, json.dumps(message))

    def _wait(self, keys: dict, what: str) -> dict:
        """Wait for ``keys`` ({key: rank whose heartbeat vouches for it}); their messages."""
        got: dict = {}
        seen: dict = {}
        pause = min(1.0, 0.05 * max(1, len(keys)) ** 0.5)
        while len(got) < len(keys):
            for key, peer in keys.items():
                if key in got:
                    continue
                if self._call(what, self.store.check, [key]):
                    got[key] = json.loads(self._call(what, self.store.get, key).decode())
                    continue
                dead = self._call(what, self._stale, seen, peer, what)
                if dead:
                    raise DistributedError(dead)
            time.sleep(pause)
        return got

    def wait_given(self) -> dict:
        """What the ranks were given, by rank: every other rank's on rank 0, rank 0's elsewhere."""
        keys = {f"given{p}": p for p in (range(1, self.world) if self.rank == 0 else [0])}
        got = self._wait(keys, "comparing the ranks' arguments")
        return {keys[k]: v for k, v in got.items()}

    def wait_done(self) -> dict:
        """Rank 0: every other rank's report, by rank."""
        keys = {f"done{p}": p for p in range(self.world) if p != self.rank}
        got = self._wait(keys, "waiting for the other ranks to finish their shards")
        return {keys[k]: v for k, v in got.items()}

    def wait_verdict(self, what: str = "waiting for rank 0") -> dict:
        verdict = self._wait({"verdict": 0}, what)["verdict"]
        if not verdict["ok"]:
            self._acknowledge()
        return verdict

    def _acknowledge(self) -> None:
        try:
            self.store.add("abandoned", 1)
        except Exception:
            pass

    def acknowledge_verdict(self) -> None:
        """Not rank 0: say that rank 0's good verdict was read (rank 0 may end now)."""
        self._call("acknowledging rank 0's verdict", self.store.set, f"read{self.rank}", "1")

    def wait_read(self) -> None:
        """Rank 0, after a good verdict with nothing to gather: wait until every other rank
        has read it (the store may live in this process). The run is complete by then: a
        rank whose heartbeat stops before it says so is waited for no longer, not an error."""
        seen: dict = {}
        waiting = set(range(1, self.world)) - self.gone
        what = "waiting for the other ranks to read its verdict"
        while waiting:
            for p in sorted(waiting):
                if self._call(what, self.store.check, [f"read{p}"]) or self._call(what, self._stale, seen, p, what):
                    waiting.discard(p)
            time.sleep(0.05)

    def abandon(self, error: str) -> None:
        """Rank 0: post the failing verdict, then wait a little (at most ABANDON_SECONDS)
        for the other live ranks to read it, since the store may live in this process."""
        self.post("verdict", {"ok": False, "error": error})
        deadline = time.monotonic() + ABANDON_SECONDS
        while time.monotonic() < deadline:
            try:
                read = self.store.add("abandoned", 0)
            except Exception:
                return
            if read + len(self.gone - {0}) >= self.world - 1:
                return
            time.sleep(0.05)

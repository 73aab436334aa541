"""CPU thread policy of the long commands (pretrain, render, probe, orbit): how many intra-op threads torch uses.

A demo-sized training step is ~700 tiny ATen ops, each an OpenMP parallel region ending in a barrier. While
another process keeps a core busy, one of our threads is descheduled at nearly every barrier and the step waits
a scheduler time slice for it: beside two busy processes on 2 cores a 47 ms step takes ~2 s (issue 25). No fixed
thread count wins both alone and contended, so `auto` watches: a sampler thread reads, every PERIOD s, how long
the main (compute) thread waited for a CPU against how long it ran (/proc/self/task/TID/schedstat), and
- waiting more than HIGH of the time with n > 1 threads: use n - 1;
- waiting less than LOW: try n + 1 (up to the CPUs this process may use) after a pause that doubles each time
  such a try had to be undone (PAUSES), so a lasting neighbour costs little and a departed one is noticed.
torch's thread count is per calling thread under OpenMP, so the main thread applies the choice at safe points
(`tick()`, called between steps and batches). Loader threads compute with one thread (`single_thread`).

Setting: SSL_EQ_THREADS (all commands) or pretrain's `threads=`: "auto" (default) | N (N threads, not watched).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

log = logging.getLogger("ssl_eq")

ENV = "SSL_EQ_THREADS"
PERIOD = 0.5                 # s between two looks at the main thread's wait
HIGH, LOW = 0.2, 0.05        # fraction of its time the main thread waited for a CPU: too much / little enough
PAUSES = (2.0, 4.0, 8.0, 16.0, 32.0)  # s before trying one thread more; the next one after each undone try
BUSY = 0.1                   # a window counts only if the main thread ran or waited this fraction of it


def allowed_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_setting(value: Any, name: str = f"threads ({ENV} or pretrain's threads=)") -> int | None:
    """"auto" -> None (watched); a positive integer -> that many threads. Raises ValueError naming the setting."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"{name}: expected 'auto' or a positive integer, got {value!r}")


def schedstat(tid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting for one) of thread `tid` of this process; None where the kernel has no schedstat."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            ran, waited = f.read().split()[:2]
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


class Governor:
    """The `auto` decision, a pure state machine: `observe(wait_fraction, now)` -> the thread count to use."""

    def __init__(self, cpus: int, start: int | None = None):
        self.cpus = cpus
        self.threads = start or cpus
        self.pause = 0            # index into PAUSES
        self.next_try = 0.0       # no upward try before this time
        self.trial_since: float | None = None  # when the last upward try began, until it is kept or undone

    def observe(self, wait: float | None, now: float) -> int:
        """wait: the main thread's share of the last window spent waiting for a CPU (None: it was idle)."""
        if wait is None:
            return self.threads
        if wait > HIGH and self.threads > 1:
            if self.trial_since is not None:  # the last try made it worse: wait longer before the next one
                self.pause = min(self.pause + 1, len(PAUSES) - 1)
            self.threads -= 1
            self.trial_since, self.next_try = None, now + PAUSES[self.pause]
        elif self.trial_since is not None and now - self.trial_since >= 2 * PERIOD:
            self.trial_since, self.pause = None, 0  # the try held for two windows: keep it
        elif wait < LOW and self.threads < self.cpus and now >= self.next_try and self.trial_since is None:
            self.threads += 1
            self.trial_since = now
        return self.threads


class ThreadPolicy:
    """Sets torch's intra-op thread count of the main thread and, for `auto`, keeps it fitted to the load.

    setting: "auto" | N | None (None: SSL_EQ_THREADS, else "auto"). `tick()` (main thread) applies the current
    choice; `summary()` says what was used, for the run's records.
    """

    def __init__(self, setting: Any = None, cpus: int | None = None,
                 sample: Callable[[int], tuple[int, int] | None] = schedstat):
        self.setting = str(setting if setting is not None else os.environ.get(ENV, "auto")).strip().lower()
        self.fixed = parse_setting(self.setting)
        self.cpus = cpus or allowed_cpus()
        self.governor = Governor(self.cpus, self.fixed)
        self._sample = sample
        self._tid = threading.get_native_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._applied: int | None = None
        self._since = time.monotonic()
        self.seconds_at: dict[int, float] = {}
        self.changes = 0
        self.watched = self.fixed is None and sample(self._tid) is not None

    def start(self) -> ThreadPolicy:
        self.tick()
        if self.watched:
            self._thread = threading.Thread(target=self._watch, name="ssl_eq-threads", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._account(time.monotonic())

    def tick(self) -> None:
        """Apply the chosen thread count (call from the thread that runs the computation)."""
        want = self.governor.threads
        if want != self._applied:
            import torch

            now = time.monotonic()
            self._account(now)
            self.changes += self._applied is not None
            torch.set_num_threads(want)
            self._applied = want

    def _account(self, now: float) -> None:
        if self._applied is not None:
            self.seconds_at[self._applied] = self.seconds_at.get(self._applied, 0.0) + now - self._since
        self._since = now

    def _watch(self) -> None:
        last, t_last = self._sample(self._tid), time.monotonic()
        while not self._stop.wait(PERIOD):
            now, cur = time.monotonic(), self._sample(self._tid)
            if cur is None or last is None:
                return
            ran, waited = (c - p for c, p in zip(cur, last))
            busy = ran + waited
            self.governor.observe(waited / busy if busy > BUSY * (now - t_last) * 1e9 else None, now)
            last, t_last = cur, now

    def summary(self) -> dict[str, Any]:
        """{"setting", "cpus", "watched", "changes", "seconds_at": {threads: s}} (for metrics.json and logs)."""
        self._account(time.monotonic())
        return {"setting": self.setting, "cpus": self.cpus, "watched": self.watched, "changes": self.changes,
                "seconds_at": {str(k): round(v, 2) for k, v in sorted(self.seconds_at.items())}}

    def describe(self) -> str:
        if self.fixed is not None:
            return f"threads: {self.fixed} (fixed by {ENV} / threads=)"
        how = "adjusted to the load" if self.watched else "not watched: no /proc schedstat here"
        return f"threads: auto, up to {self.cpus} CPUs ({how}; {ENV}=N fixes it)"


_active: ThreadPolicy | None = None


@contextmanager
def thread_policy(setting: Any = None) -> Iterator[ThreadPolicy]:
    """Run the enclosed work under a ThreadPolicy; `tick()` reaches it from the work's loops."""
    global _active
    policy, outer = ThreadPolicy(setting).start(), _active
    _active = policy
    log.debug(policy.describe())
    try:
        yield policy
    finally:
        policy.stop()
        _active = outer
        if outer is not None:
            outer._applied = None  # re-apply the outer policy's count at its next tick
            outer.tick()


def tick() -> None:
    """Apply the active policy's thread count; nothing when no policy is active (e.g. the Python API)."""
    if _active is not None:
        _active.tick()


def single_thread() -> None:
    """Initialiser of loader threads: their tensor work (collate, decode) stays off the compute threads' cores."""
    import torch

    torch.set_num_threads(1)

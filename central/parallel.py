"""Pure work side by side in processes of their own (the audit's runner, pact.audit.Runner).

The audit of a merchant-year checks every entry's hash and Ed25519 signature and
recomputes every discount: a few seconds of one core per 10,000 entries, work Python
runs on one core at a time in one process. :class:`ForkedWorkers` runs its shares in
forked child processes, one per core: each child starts with the parent's memory (the
entries, the policies, the cards' standing, read from the store before), does pure work
on it and sends back its findings. It does no I/O of its own, so nothing it inherits
(the store's connections, open files) is used twice.

Forking is for the command line's single-threaded processes (``unioncard central audit
run``, ``unioncard audit verify``). The console runs the audit in a web server's thread,
where a fork could copy a lock another thread holds: it runs the shares in turn.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# the work of the pool being run: set before the fork, so each child inherits it
_WORK: Callable[[int], Any] | None = None


def _run(k: int) -> Any:
    assert _WORK is not None  # set by ForkedWorkers.__call__ before the fork
    gc.disable()  # the child's objects are the parent's and die with it: no cycles to find
    return _WORK(k)


class ForkedWorkers:
    """A :class:`pact.audit.Runner` over ``workers`` forked processes (one per core)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else len(os.sched_getaffinity(0)))

    def __call__(self, work: Callable[[int], T], count: int) -> list[T]:
        global _WORK
        if self.workers == 1 or count <= 1:
            return [work(k) for k in range(count)]
        _WORK = work
        gc.freeze()  # the children do not copy the parent's pages to collect them
        try:
            context = multiprocessing.get_context("fork")
            with context.Pool(min(self.workers, count)) as pool:
                return pool.map(_run, range(count), chunksize=1)
        finally:
            _WORK = None
            gc.unfreeze()

    def __repr__(self) -> str:
        return f"ForkedWorkers({self.workers})"

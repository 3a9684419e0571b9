"""``no_hang``: turn a hang into a test failure (for the fuzz tests).

Hypothesis's ``deadline`` only judges an example after it has finished, so an
endless loop would stall the suite instead of failing it. ``no_hang`` arms a
SIGALRM timer around the body: pure-Python code is interrupted between bytecodes
and the test fails with :class:`Hang`. Main thread only (Unix signals).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Hang(Exception):  # noqa: N818 - the name says what happened
    """The body ran past its time: it would have hung."""


@contextmanager
def no_hang(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

"""SIGINT / SIGTERM during a fetch: recorded, and raised where cleaning up is possible.

Python raises KeyboardInterrupt wherever the main thread happens to be when
it runs a signal's handler; three places make that unreliable for a fetch:

- inside ``subprocess.Popen``, after the fork and before the ``Popen``
  object exists: nobody could then end the child. A handler that only
  *records* the signal while the child is being started, and raises once
  the child can be ended, closes that window (:meth:`Interrupts.deferred`).
  Blocking the signals with ``pthread_sigmask`` instead does not: the mask
  is the main thread's only, the kernel hands the signal to another thread
  (OpenBLAS's), and CPython 3.11 then does not wake the main thread, which
  slept on in ``poll()`` until npm finished (the fetch ran on, exit 0).
- inside a blocking call that the signal did not interrupt (it was taken by
  another thread): the main thread sees it only when the call returns, so
  waits on a child are made in short slices (see ``sources.npm_pack``).
- inside a finalizer (``__del__``, a weakref callback): Python prints the
  KeyboardInterrupt there and drops it. The record survives, and
  :meth:`Interrupts.check` raises it before anything is committed and
  before the fetch reports success.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

#: The signals a fetch ends on, cleaning up after itself.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """What :func:`interrupts_caught` installs: records SIGINT / SIGTERM, raises when allowed."""

    def __init__(self):
        self.received: int | None = None
        self._deferred = 0

    def handle(self, signum, frame) -> None:
        """The signal handler: record; raise KeyboardInterrupt unless deferred."""
        self.received = signum
        if not self._deferred:
            raise KeyboardInterrupt(f"signal {signum}")

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived (even one whose exception was lost)."""
        if self.received is not None:
            raise KeyboardInterrupt(f"signal {self.received}")

    @contextmanager
    def deferred(self):
        """Record, do not raise, during the block; raise at its end if one came (and the
        block itself did not fail: its own exception, e.g. the first KeyboardInterrupt
        whose cleanup this block runs, goes on unchanged)."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if not self._deferred:
            self.check()


_active: Interrupts | None = None


@contextmanager
def interrupts_caught():
    """SIGINT and SIGTERM become a recorded KeyboardInterrupt for the block (main thread).

    Nested uses share the outer one. A signal that a caller has set to be
    ignored, or given a handler of its own, is left as it is. If a signal
    arrived, the block ends in KeyboardInterrupt even when the exception
    raised for it was lost on the way.

    Yields
    ------
    Interrupts
        The record; ``deferred()`` holds the raise back for a block that
        must not be cut in the middle (starting a child, ending it).
    """
    global _active
    if _active is not None:
        yield _active
        return
    caught = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield caught  # handlers can only be set from the main thread: nothing recorded
        return
    previous = {}
    caught._deferred = 1  # nothing raised while half of the handlers are installed
    try:
        for signum in SIGNALS:
            if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
                previous[signum] = signal.signal(signum, caught.handle)
        _active = caught
        caught._deferred = 0
        yield caught
    finally:
        caught._deferred = 1  # restoring the handlers is not cut short either
        _active = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    caught.check()


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if the active :func:`interrupts_caught` recorded a signal.

    Called before a write that commits (a cache's manifest), so that a
    signal whose exception was lost cannot let the commit happen.
    """
    if _active is not None:
        _active.check()

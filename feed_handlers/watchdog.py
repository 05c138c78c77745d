"""The read watchdog of a connection: ends a read that waited too long, with no timer per frame.

``asyncio.wait_for`` around every ``recv()`` wraps each read in a task and a timer: with it the runner
received 56k to 65k frames/s where the bare WebSocket client takes 237k to 275k
(``bench/receive_floor.py``), about 12 µs a frame, more than a Binance trade takes to parse and publish.
A ``ReadWatchdog`` keeps one timer per connection on the event loop's monotonic clock instead. The
reader marks each read's start and end (two attribute stores); when the timer fires it looks at the read
in progress: past the venue's silence timeout, or past the connection's rotation deadline, it cancels
the reading task (cancelling a websockets ``recv()`` loses no message); otherwise it sets itself again
for the moment the read in progress would expire. So the timer fires about once per silence period,
however many frames arrive.

Only a read is ever cancelled: time the reader spends between reads (handling a frame, waiting for room
in the publish buffer) is not silence, and a frame being handled is never interrupted. A deadline that
passes between reads is reported by ``expired`` and acted on by the reader before its next read.
"""

from __future__ import annotations

import asyncio

__all__ = ["ReadWatchdog"]


class ReadWatchdog:
    """One reading task's deadlines: ``silence_s`` per read, and ``deadline`` (loop time) for the connection.

    Used as a context manager around the read loop (``runner._Group._read_until``): ``reading()`` before each
    read, ``done_reading()`` after it; in ``except CancelledError`` around the read, ``fired()`` tells this
    watchdog's cancellation (stop reading, ``expired`` says why) from anyone else's (re-raise); ``expired``
    is checked before each read.
    """

    def __init__(self, silence_s: float | None, deadline: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a ReadWatchdog watches the task that creates it"
        self._task = task
        self._silence_s = silence_s
        self._deadline = deadline
        self._read_since: float | None = None  # loop time the read in progress started; None between reads
        self._cancelled = False  # this watchdog cancelled the task
        self._handle: asyncio.TimerHandle | None = None
        #: Why the connection must end ("silent", "rotation"), once it must.
        self.expired: str | None = None

    def __enter__(self) -> ReadWatchdog:
        self._arm(self._loop.time())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def reading(self) -> None:
        """A read starts now."""
        self._read_since = self._loop.time()

    def done_reading(self) -> None:
        """The read returned a frame."""
        self._read_since = None

    def fired(self) -> bool:
        """In the reader's ``except CancelledError``: True if the cancellation was this watchdog's alone (it is
        then withdrawn, and ``expired`` says why); False if anyone else cancelled the task too (re-raise)."""
        if not self._cancelled:
            return False
        self._cancelled = False
        return self._task.uncancel() == 0

    def _arm(self, now: float) -> None:
        """Set the timer for the earliest moment something could expire, seen from ``now``."""
        due = [] if self._deadline is None else [self._deadline]
        if self._silence_s is not None:  # the read in progress, or the next one, may go silent
            due.append((self._read_since if self._read_since is not None else now) + self._silence_s)
        self._handle = self._loop.call_at(min(due), self._check) if due else None

    def _check(self) -> None:
        self._handle = None
        now = self._loop.time()
        since = self._read_since
        if self._deadline is not None and now >= self._deadline:
            self.expired = "rotation"
        elif since is not None and self._silence_s is not None and now - since >= self._silence_s:
            self.expired = "silent"
        else:
            self._arm(now)
            return
        if since is not None:  # a read is waiting: end it; between reads the reader sees `expired` itself
            self._cancelled = True
            self._task.cancel()

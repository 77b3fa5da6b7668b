"""Signal handling for a consumer process.

The first SIGTERM or SIGINT stops reading: workers finish the batch in hand
within the pool's grace period and acknowledge it. A second signal cancels
the workers at once; whatever they held stays pending for another consumer
to claim after the visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...

    def abort(self) -> None: ...


@dataclass
class Interruption:
    """The first stop signal the process received, if any, for the command's summary and exit status."""

    signum: int | None = None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_status(self) -> int:
        """128 plus the signal number, as a shell reports a process ended by that signal (130 for SIGINT)."""
        return 128 + self.signum if self.signum is not None else 0


@contextlib.contextmanager
def first_signal_stops(request_stop: Callable[[], None]) -> Iterator[Interruption]:
    """Call ``request_stop`` on the first SIGINT or SIGTERM, and end the process on the second.

    The handlers are installed with ``signal.signal`` for the duration of
    the block (so only in the main thread) and replace an inherited SIG_IGN.
    The second signal restores the default action and sends itself again,
    so the process ends as that signal ends it. The previous handlers come
    back when the block exits.
    """
    interruption = Interruption()

    def on_signal(signum: int, frame) -> None:
        if interruption.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        interruption.signum = signum
        request_stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interruption
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def install_signal_handlers(pool: Stoppable, loop: asyncio.AbstractEventLoop | None = None) -> Interruption:
    """Stop ``pool`` on the first SIGTERM or SIGINT and abort it on the second. Return the record of the first."""
    loop = loop or asyncio.get_running_loop()
    interruption = Interruption()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        if received == 1:
            interruption.signum = signum
            pool.stop()
        else:
            pool.abort()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return interruption


def remove_signal_handlers(loop: asyncio.AbstractEventLoop | None = None) -> None:
    loop = loop or asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)

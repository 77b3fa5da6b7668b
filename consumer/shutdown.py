"""Signal handling for a consumer process.

The first SIGTERM or SIGINT stops reading: workers finish the batch in hand
within the pool's grace period and acknowledge it. A second signal cancels
the workers at once; whatever they held stays pending for another consumer
to claim after the visibility timeout.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Protocol


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

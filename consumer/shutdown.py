"""Signal handling for a consumer process.

The first SIGTERM or SIGINT stops reading: workers finish the batch in hand
within the pool's grace period and acknowledge it. A second signal cancels
the workers at once; whatever they held stays pending for another consumer
to claim after the visibility timeout.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...

    def abort(self) -> None: ...


def install_signal_handlers(pool: Stoppable, loop: asyncio.AbstractEventLoop | None = None) -> None:
    loop = loop or asyncio.get_running_loop()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        if received == 1:
            pool.stop()
        else:
            pool.abort()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def remove_signal_handlers(loop: asyncio.AbstractEventLoop | None = None) -> None:
    loop = loop or asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)

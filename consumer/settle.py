"""Atomic settlement of a micro-batch: results, dead letters and XACK together.

Everything a batch produces is written by one Lua script (``settle.lua``) in
one round trip. The script skips any transaction the run already has an
outcome for (a marker key per run and transaction_id, kept for the marker
TTL), which makes results effectively once under at-least-once delivery.

NOTE: marker keys are passed as arguments, not KEYS, so the script is not
Redis Cluster safe; on a cluster every key of a prefix must share a hash slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aioredis

from rewardpilot.models import DeadLetter, Recommendation
from rewardpilot.streams import StreamKeys

_SCRIPT = resources.files("consumer").joinpath("settle.lua").read_text()


@dataclass(slots=True)
class SettleCounts:
    written: int = 0
    duplicates: int = 0
    dead_letters: int = 0


class Settler:
    """Writes a batch's outcomes and acknowledges its entries atomically."""

    def __init__(self, client: aioredis.Redis, keys: StreamKeys, *, run: str, group: str,
                 transactions_stream: str | None = None, results_stream: str | None = None,
                 marker_ttl_seconds: int, results_maxlen: int | None = None):
        self.client = client
        self.keys = keys
        self.run = run
        self.group = group
        self.transactions = transactions_stream or keys.transactions
        self.results = results_stream or keys.results(run)
        self.ttl = marker_ttl_seconds
        self.maxlen = results_maxlen or 0
        self._script = client.register_script(_SCRIPT)

    def marker(self, transaction_id: str) -> str:
        return self.keys.result_marker(self.run, transaction_id)

    async def settle(
        self,
        results: list[tuple[str, Recommendation]],
        dead_letters: list[DeadLetter],
        acknowledge_only: list[str] = (),
    ) -> SettleCounts:
        """Publish results and dead letters, then XACK them and ``acknowledge_only``."""
        args: list = [self.group, self.ttl, self.maxlen]
        for entry_id, recommendation in results:
            args += [
                "r", entry_id, self.marker(recommendation.transaction_id),
                recommendation.model_dump_json(), recommendation.user_id,
                recommendation.transaction_id,
            ]
        for letter in dead_letters:
            transaction_id = letter.transaction_id or f"entry:{letter.entry_id}"
            args += [
                "d", letter.entry_id, self.marker(transaction_id),
                letter.model_dump_json(), letter.payload.get("user_id", ""), transaction_id,
            ]
        for entry_id in acknowledge_only:
            args += ["a", entry_id, "", "", "", ""]

        if len(args) == 3:
            return SettleCounts()
        written, duplicates, dead = await self._script(
            keys=[self.results, self.keys.dead_letters, self.transactions], args=args
        )
        return SettleCounts(int(written), int(duplicates), int(dead))

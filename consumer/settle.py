"""Atomic settlement of a micro-batch: spend under caps, results, dead letters and XACK together.

Everything a batch produces is written by one Lua script (``settle.lua``) in
one round trip. The script skips any transaction the run already has an
outcome for (a marker key per run and transaction_id, kept for the marker
TTL), which makes results effectively once under at-least-once delivery.
It returns each skipped entry with the entry id in its marker, so the
consumer can log a transaction_id published again, which gets no new result.

A result recommended with cap state comes with the cents it read per hash
field (``checks``). The script applies its ``spend_updates`` only while
those fields still hold the same cents; otherwise it returns the entry as a
conflict, unacknowledged, for the consumer to recommend again.

NOTE: marker keys are passed as arguments, not KEYS, so the script is not
Redis Cluster safe; on a cluster every key of a prefix must share a hash slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Mapping

import redis
import redis.asyncio as aioredis

from rewardpilot.engine.evaluation import Evaluation
from rewardpilot import resp
from rewardpilot.models import DeadLetter, Recommendation
from rewardpilot.streams import LIVE_RUN, StreamKeys

_SCRIPT = resources.files("consumer").joinpath("settle.lua").read_text()
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


SpendChecks = Mapping[str, Mapping[str, int]]
Result = Recommendation | Evaluation  # the in-process engine's results are Evaluations


def result_json(result: Result) -> bytes | str:
    """Serialize a result for the results stream; both kinds give the same JSON document."""
    if isinstance(result, Evaluation):
        return result.to_json()
    return result.model_dump_json()


_NOTHING: Mapping[str, int] = {}


@dataclass(slots=True)
class SettleCounts:
    """The counts of one settle call, and ``conflicts``: the entry ids left unsettled and pending.

    ``duplicates_of`` maps each entry id skipped as a duplicate to the entry
    id in its marker: the entry whose outcome the run already has for
    that transaction_id. The two ids are equal for an entry settled before,
    such as one redelivered after a settle whose reply was lost.
    """

    written: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    conflicts: list[str] = field(default_factory=list)
    duplicates_of: dict[str, str] = field(default_factory=dict)


class Settler:
    """Writes a batch's outcomes and acknowledges its entries atomically."""

    def __init__(self, client: aioredis.Redis, keys: StreamKeys, *, run: str, group: str,
                 transactions_stream: str | None = None, results_stream: str | None = None,
                 marker_ttl_seconds: int, results_maxlen: int | None = None, cap_ttl_seconds: int | None = None):
        self.client = client
        self.keys = keys
        self.run = run
        self.group = group
        self.transactions = transactions_stream or keys.transactions
        self.results = results_stream or keys.results(run)
        self.ttl = marker_ttl_seconds
        self.maxlen = results_maxlen or 0
        # By default a replay's cap state lives as long as its markers, and the live state has no expiry.
        if cap_ttl_seconds is None:
            cap_ttl_seconds = 0 if run == LIVE_RUN else marker_ttl_seconds
        self.cap_ttl = cap_ttl_seconds
        # A job's commands set every key's expiry when they exit. The script also gives the job's results
        # and dead-letter streams this expiry when it writes to them (EXPIRE NX), so that a process killed
        # before its exit leaves no stream behind without one.
        self._job_stream_ttl = cap_ttl_seconds if keys.job is not None and cap_ttl_seconds > 0 else 0
        # The script appends the transaction_id or user_id to these prefixes.
        self._marker_prefix = keys.result_marker(run, "")
        self._cap_prefix = keys.cap_spend("", run)

    @classmethod
    def for_settings(cls, client: aioredis.Redis, settings, *, group: str,
                     transactions_stream: str | None = None) -> Settler:
        """Build the settler a transport of ``settings`` (a ``ConsumerSettings``) uses."""
        return cls(client, settings.keys, run=settings.run, group=group, transactions_stream=transactions_stream,
                   results_stream=settings.results_stream, marker_ttl_seconds=settings.result_ttl_seconds,
                   results_maxlen=settings.results_maxlen, cap_ttl_seconds=settings.cap_ttl_seconds)

    async def settle(
        self,
        results: list[tuple[str, Result]],
        dead_letters: list[DeadLetter],
        acknowledge_only: list[str] = (),
        checks: SpendChecks | None = None,
    ) -> SettleCounts:
        """Apply spend, publish results and dead letters, then XACK them and ``acknowledge_only``.

        ``checks`` maps an entry id to the cents its recommendation read per
        cap hash field. Results of one user must come in stream order. A
        result whose fields changed since, and every later result of that
        user, comes back in ``SettleCounts.conflicts`` with nothing written.
        """
        if not results and not dead_letters and not acknowledge_only:
            return SettleCounts()

        checks = checks or {}
        args: list = [
            "EVALSHA", _SCRIPT_SHA, 3, self.results, self.keys.dead_letters, self.transactions,
            self.group, self.ttl, self.maxlen, self.cap_ttl, self._marker_prefix, self._cap_prefix,
            len(results), len(dead_letters), self._job_stream_ttl,
        ]
        for entry_id, result in results:
            loaded = checks.get(entry_id, _NOTHING)
            updates = result.spend_updates
            args += [entry_id, result_json(result), result.user_id, result.transaction_id, len(loaded), len(updates)]
            for name, cents in loaded.items():
                args += [name, int(cents)]
            for name, cents in updates:
                args += [name, int(cents)]
        for letter in dead_letters:
            # `dlq redrive` sends a letter back through the run that wrote it, so the letter records that run.
            letter.run = self.run
            transaction_id = letter.transaction_id or f"entry:{letter.entry_id}"
            args += [letter.entry_id, letter.model_dump_json(), letter.payload.get("user_id", ""), transaction_id]
        args += acknowledge_only

        written, duplicates, dead, conflicts, skipped = await self._evaluate(resp.pack(args))
        # skipped alternates a skipped entry id and the entry id in its marker.
        duplicates_of = {_text(skipped[index]): _text(skipped[index + 1]) for index in range(0, len(skipped), 2)}
        return SettleCounts(int(written), int(duplicates), int(dead), [_text(entry) for entry in conflicts],
                            duplicates_of)

    async def _evaluate(self, packed: bytes):
        """Run the packed EVALSHA, and load the script first if the server has not cached it."""
        try:
            return await resp.execute_async(self.client, packed)
        except redis.exceptions.NoScriptError:
            await self.client.script_load(_SCRIPT)
            return await resp.execute_async(self.client, packed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

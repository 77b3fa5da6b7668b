"""The dead-letter stream: list, redrive and purge what was set aside.

A dead letter holds the original entry's payload. Redriving XADDs that
payload back onto the transactions stream (keeping its transaction_id),
deletes the run's outcome marker so the new delivery gets a result, and
deletes the dead letter, all in one MULTI.
"""

from __future__ import annotations

import json
from typing import Iterator

import redis

from rewardpilot.models import DeadLetter
from rewardpilot.streams import LIVE_RUN, StreamKeys

READ_CHUNK = 500


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _letter(fields: dict) -> DeadLetter:
    return DeadLetter.model_validate_json(fields.get("data") or fields.get(b"data"))


def list_dead_letters(client: redis.Redis, keys: StreamKeys, *, limit: int | None = None) -> Iterator[tuple[str, DeadLetter]]:
    """Yield ``(dead-letter id, DeadLetter)`` oldest first, up to ``limit``."""
    cursor, seen = "-", 0
    while limit is None or seen < limit:
        count = READ_CHUNK if limit is None else min(READ_CHUNK, limit - seen)
        entries = client.xrange(keys.dead_letters, min=cursor, max="+", count=count)
        if not entries:
            return
        for entry_id, fields in entries:
            seen += 1
            yield _text(entry_id), _letter(fields)
        cursor = "(" + _text(entries[-1][0])


class RedriveError(ValueError):
    """A dead letter cannot be redriven (not found, or it has no transaction payload)."""


def redrive(client: redis.Redis, keys: StreamKeys, letter_ids: list[str] | None = None, *,
            run: str = LIVE_RUN) -> list[str]:
    """Put dead letters back onto the transactions stream; return the new entry ids.

    ``letter_ids`` None redrives every dead letter. Letters without a
    transaction payload (entries deleted while pending) raise RedriveError
    when named and are skipped under ``--all``.
    """
    if letter_ids is None:
        chosen = [(letter_id, letter) for letter_id, letter in list_dead_letters(client, keys)
                  if letter.payload.get("data")]
    else:
        chosen = []
        for letter_id in letter_ids:
            entries = client.xrange(keys.dead_letters, min=letter_id, max=letter_id)
            if not entries:
                raise RedriveError(f"dead letter {letter_id} not found; list them with `rewardpilot dlq list`")
            letter = _letter(entries[0][1])
            if not letter.payload.get("data"):
                raise RedriveError(f"dead letter {letter_id} has no transaction payload ({letter.reason}); "
                                   "it cannot be redriven, only purged")
            chosen.append((letter_id, letter))

    new_ids = []
    for letter_id, letter in chosen:
        transaction_id = letter.transaction_id or _transaction_id(letter.payload["data"])
        pipe = client.pipeline(transaction=True)
        pipe.xadd(keys.transactions, {"data": letter.payload["data"]})
        if transaction_id:
            pipe.delete(keys.result_marker(run, transaction_id))
        pipe.delete(keys.result_marker(run, f"entry:{letter.entry_id}"))
        pipe.xdel(keys.dead_letters, letter_id)
        new_ids.append(_text(pipe.execute()[0]))
    return new_ids


def _transaction_id(data: str) -> str | None:
    try:
        value = json.loads(data).get("transaction_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def purge(client: redis.Redis, keys: StreamKeys) -> int:
    """Delete the dead-letter stream; return how many dead letters it held."""
    pipe = client.pipeline(transaction=True)
    pipe.xlen(keys.dead_letters)
    pipe.delete(keys.dead_letters)
    return int(pipe.execute()[0])

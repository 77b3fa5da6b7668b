"""The dead-letter stream: list, redrive and purge what was set aside.

A dead letter holds the original entry's payload. Redriving XADDs that
payload back onto the transactions stream the consumers read (keeping its
transaction_id), deletes the run's outcome marker so the new delivery gets a
result, and deletes the dead letter, all in one MULTI. With partitions, that
stream is the partition of the transaction's user_id under the count stored
for the prefix (``rewardpilot.partitions``).
"""

from __future__ import annotations

import json
from typing import Iterator

import redis

from rewardpilot.models import DeadLetter
from rewardpilot.partitions import partition_of, partition_stream, partition_streams, stored_count
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
    """A dead letter cannot be redriven: not found, no transaction payload, or no partition to route it to."""


def redrive(client: redis.Redis, keys: StreamKeys, letter_ids: list[str] | None = None, *,
            run: str = LIVE_RUN) -> list[str]:
    """Put dead letters back onto the transactions stream the consumers read; return the new entry ids.

    ``letter_ids`` None redrives every dead letter. A letter that cannot be
    redriven (see ``target_stream``) raises RedriveError when named, and is
    skipped and kept in the dead-letter stream under ``--all``.
    """
    partitions = stored_count(client, keys)
    chosen = []
    if letter_ids is None:
        for letter_id, letter in list_dead_letters(client, keys):
            try:
                chosen.append((letter_id, letter, target_stream(keys, partitions, letter_id, letter)))
            except RedriveError:
                continue
    else:
        for letter_id in letter_ids:
            letter = _read_letter(client, keys, letter_id)
            chosen.append((letter_id, letter, target_stream(keys, partitions, letter_id, letter)))

    new_ids = []
    for letter_id, letter, stream in chosen:
        transaction_id = letter.transaction_id or _transaction_field(letter.payload["data"], "transaction_id")
        pipe = client.pipeline(transaction=True)
        pipe.xadd(stream, {"data": letter.payload["data"]})
        if transaction_id:
            pipe.delete(keys.result_marker(run, transaction_id))
        pipe.delete(keys.result_marker(run, f"entry:{letter.entry_id}"))
        pipe.xdel(keys.dead_letters, letter_id)
        new_ids.append(_text(pipe.execute()[0]))
    return new_ids


def _read_letter(client: redis.Redis, keys: StreamKeys, letter_id: str) -> DeadLetter:
    entries = client.xrange(keys.dead_letters, min=letter_id, max=letter_id)
    if not entries:
        raise RedriveError(f"dead letter {letter_id} not found; list them with `rewardpilot dlq list`")
    return _letter(entries[0][1])


def target_stream(keys: StreamKeys, partitions: int, letter_id: str, letter: DeadLetter) -> str:
    """Return the stream a dead letter is redriven onto; raise RedriveError when there is none.

    With one partition that is the single transactions stream. With more, it
    is the partition of the payload's user_id. A payload without a readable
    user_id goes back to the partition stream it was read from, when the
    letter names one of the current partition streams.
    """
    if not letter.payload.get("data"):
        raise RedriveError(f"dead letter {letter_id} has no transaction payload ({letter.reason}); "
                           "it cannot be redriven, only purged")
    if partitions == 1:
        return keys.transactions

    user_id = _transaction_field(letter.payload["data"], "user_id")
    if user_id is not None:
        return partition_stream(keys, partitions, partition_of(user_id, partitions))
    if letter.stream in partition_streams(keys, partitions):
        return letter.stream
    raise RedriveError(
        f"dead letter {letter_id} has no user_id in its payload and came from {letter.stream!r}, "
        f"which is not one of the {partitions} partition streams, so no consumer would read it "
        "there; purge it, or publish a corrected transaction with `rewardpilot publish`"
    )


def _transaction_field(data: str, name: str) -> str | None:
    """Return a string field of a transaction payload, or None when it is missing or unreadable."""
    try:
        value = json.loads(data).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def purge(client: redis.Redis, keys: StreamKeys) -> int:
    """Delete the dead-letter stream; return how many dead letters it held."""
    pipe = client.pipeline(transaction=True)
    pipe.xlen(keys.dead_letters)
    pipe.delete(keys.dead_letters)
    return int(pipe.execute()[0])

"""The dead-letter stream: list, redrive and purge what was set aside.

A dead letter contains the original entry's payload, that entry's id and
the run whose consumer wrote it (``DeadLetter.run``). Settling the letter set
the run's outcome marker, ``{base}done:{run}:{transaction_id}`` or
``{base}done:{run}:entry:{entry id}`` when the transaction could not be
read, to that entry id. While the marker exists, the run skips the
transaction as a duplicate.

Redrive handles each letter by the run it records:

- A live letter's payload is XADDed back onto the transactions stream the
  consumers read, keeping its transaction_id. With partitions, that stream
  is the partition of the transaction's user_id under the count stored for
  the prefix (``rewardpilot.partitions``).
- A replay run's letter never goes back onto the transactions stream,
  because the live group would read it there and the replay's group never
  would. Redrive only deletes its markers and the letter. A new
  ``rewardpilot replay`` of the range in ``RedriveReport.replays`` then
  processes the original entry again.

Redrive and purge delete a marker only while its value is still the
letter's entry id. A marker that a later outcome of the same transaction_id
set is kept. One Lua script call (``_RELEASE_SCRIPT``) handles each letter,
so its XADD, its marker deletes and its XDEL happen together. A letter that
another redrive or purge has already deleted is skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterator

import redis
from pydantic import ValidationError
from redis.commands.core import Script

from rewardpilot.models import DeadLetter
from rewardpilot.partitions import partition_of, partition_stream, partition_streams, stored_count
from rewardpilot.streams import LIVE_RUN, StreamKeys, entry_key

READ_CHUNK = 500

_FULL_ENTRY_ID = re.compile(r"^\d+-\d+$")

# KEYS[1] dead-letter stream, KEYS[2] the transaction_id marker, KEYS[3] the
# entry marker, and for a live redrive KEYS[4], the stream to XADD onto.
# ARGV[1] dead-letter id, ARGV[2] the letter's original entry id, ARGV[3] the
# payload's data field (live redrive only).
# Returns false (None in Python) when the letter no longer exists, else
# {new entry id or "", markers deleted}. XADD runs first, so when it fails
# nothing has changed yet.
_RELEASE_SCRIPT = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local new_id = ''
if #KEYS == 4 then
  new_id = redis.call('XADD', KEYS[4], '*', 'data', ARGV[3])
end
local deleted = 0
for i = 2, 3 do
  if redis.call('GET', KEYS[i]) == ARGV[2] then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
redis.call('XDEL', KEYS[1], ARGV[1])
return {new_id, deleted}
"""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _letter(fields: dict) -> DeadLetter:
    return DeadLetter.model_validate_json(fields.get("data") or fields.get(b"data"))


@dataclass(frozen=True)
class UnreadableLetter:
    """A dead-letter stream entry that is not a ``DeadLetter``: its ``data`` field as text and the parse error.

    The consumer never writes one. It comes from an XADD by hand or from a
    letter that a newer version of the model no longer reads.
    """

    data: str
    error: str


def list_dead_letters(client: redis.Redis, keys: StreamKeys, *, limit: int | None = None,
                      run: str | None = None) -> Iterator[tuple[str, DeadLetter]]:
    """Yield ``(dead-letter id, DeadLetter)`` oldest first, up to ``limit``.

    With ``run``, only that run's letters are yielded, and ``limit`` counts
    those. A letter whose JSON cannot be read raises ValidationError; use
    ``list_letter_entries`` to list such letters too.
    """
    for letter_id, fields in _letter_fields(client, keys, limit=limit, run=run, unreadable=False):
        yield letter_id, _letter(fields)


def list_letter_entries(client: redis.Redis, keys: StreamKeys, *, limit: int | None = None,
                        run: str | None = None) -> Iterator[tuple[str, DeadLetter | UnreadableLetter]]:
    """Yield ``(dead-letter id, DeadLetter or UnreadableLetter)`` oldest first, up to ``limit``.

    An unreadable letter names no run, so with ``run`` it is left out.
    """
    for letter_id, fields in _letter_fields(client, keys, limit=limit, run=run, unreadable=True):
        try:
            yield letter_id, _letter(fields)
        except (ValidationError, ValueError, TypeError) as exc:
            raw = fields.get("data") or fields.get(b"data") or b""
            yield letter_id, UnreadableLetter(_text(raw) if isinstance(raw, (bytes, str)) else repr(raw),
                                              _parse_error(exc))


def _parse_error(exc: Exception) -> str:
    """Describe why a letter's JSON is not a DeadLetter: invalid JSON, or the fields missing or invalid."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    errors = exc.errors()
    invalid_json = [error["msg"] for error in errors if error["type"] == "json_invalid"]
    if invalid_json:
        return f"invalid JSON: {invalid_json[0]}"
    missing = [".".join(map(str, error["loc"])) for error in errors if error["type"] == "missing"]
    invalid = [".".join(map(str, error["loc"])) for error in errors if error["type"] != "missing"]
    parts = []
    if missing:
        parts.append("missing fields: " + ", ".join(missing))
    if invalid:
        parts.append("invalid fields: " + ", ".join(invalid))
    return "; ".join(parts) or str(exc)


def _letter_fields(client: redis.Redis, keys: StreamKeys, *, limit: int | None, run: str | None,
                   unreadable: bool) -> Iterator[tuple[str, dict]]:
    """Yield ``(dead-letter id, fields)`` oldest first, up to ``limit``, keeping only ``run``'s letters when set.

    Under ``run``, a letter whose JSON cannot be read raises ValidationError,
    or with ``unreadable`` True is left out.
    """
    cursor, yielded = "-", 0
    while limit is None or yielded < limit:
        count = READ_CHUNK if limit is None or run is not None else min(READ_CHUNK, limit - yielded)
        entries = client.xrange(keys.dead_letters, min=cursor, max="+", count=count)
        if not entries:
            return
        for entry_id, fields in entries:
            if run is not None:
                letter = _readable_letter(fields) if unreadable else _letter(fields)
                if letter is None or letter.run != run:
                    continue
            yield _text(entry_id), fields
            yielded += 1
            if limit is not None and yielded >= limit:
                return
        cursor = "(" + _text(entries[-1][0])


def count_run_letters(client: redis.Redis, keys: StreamKeys, run: str, *, through_id: str = "+") -> int:
    """Return how many dead letters up to ``through_id`` belong to ``run``.

    Raises RunMismatchError, naming the runs present, when none does, as
    ``redrive_letters`` does for such a ``run``. Letters whose JSON cannot be
    read belong to no run.
    """
    runs_present: dict[str, int] = {}
    cursor = "-"
    while True:
        entries = client.xrange(keys.dead_letters, min=cursor, max=through_id, count=READ_CHUNK)
        if not entries:
            break
        for _entry_id, fields in entries:
            letter = _readable_letter(fields)
            if letter is not None:
                runs_present[letter.run] = runs_present.get(letter.run, 0) + 1
        cursor = "(" + _text(entries[-1][0])
    if run not in runs_present:
        raise RunMismatchError(f"--run {run!r}: {_no_letter_of_run(keys, set(runs_present))}")
    return runs_present[run]


def _readable_letter(fields: dict) -> DeadLetter | None:
    """Return the letter stored in ``fields``, or None when its JSON cannot be read."""
    try:
        return _letter(fields)
    except (ValidationError, ValueError, TypeError):
        return None


def transaction_id_of(letter: DeadLetter) -> str | None:
    """Return the letter's transaction_id, or the one in its payload when the letter has none.

    A letter for an entry that failed validation (or was delivered too often)
    records no transaction_id, although its payload often contains one.
    """
    return letter.transaction_id or _transaction_field(letter.payload.get("data") or "", "transaction_id")


class RedriveError(ValueError):
    """A dead letter cannot be redriven: not found, no payload or partition to send it to, or its entry is gone."""


class RunMismatchError(RedriveError):
    """``--run`` names no dead letter's run, or a named dead letter belongs to another run."""


@dataclass(frozen=True)
class ReplayRedo:
    """A replay run's dead letters whose markers redrive deleted, and the entry id range that contains them."""

    run: str
    letters: int
    start_id: str
    end_id: str


@dataclass
class RedriveReport:
    """Outcome of one redrive.

    ``new_ids`` are the entries added to the transactions stream for live
    letters. ``replays`` has one range per replay run whose letters were
    released. ``unredrivable`` counts the letters that ``--all`` kept because
    they cannot be redriven, and ``other_runs`` those it kept because the
    run filter excluded them.
    """

    new_ids: list[str] = field(default_factory=list)
    replays: list[ReplayRedo] = field(default_factory=list)
    unredrivable: int = 0
    other_runs: int = 0


def redrive_letters(client: redis.Redis, keys: StreamKeys, letter_ids: list[str] | None = None, *,
                    run: str | None = None) -> RedriveReport:
    """Redrive dead letters, each by the run it records (see the module docstring).

    ``letter_ids`` None means every dead letter. ``run`` limits the redrive to
    the letters of that run. A ``run`` that no letter has, or a named letter
    of another run, raises RunMismatchError. A named letter that cannot be
    redriven raises RedriveError, and nothing is changed. Under ``--all``
    such a letter is skipped and kept in the dead-letter stream.
    """
    partitions = stored_count(client, keys)
    report = RedriveReport()
    if letter_ids is None:
        chosen = _choose_all(client, keys, partitions, run, report)
    else:
        chosen = [_choose_named(client, keys, partitions, letter_id, run)
                  for letter_id in dict.fromkeys(letter_ids)]

    release = client.register_script(_RELEASE_SCRIPT)
    replayed: dict[str, list[str]] = {}
    for letter_id, letter, stream in chosen:
        outcome = _release(release, client, keys, letter_id, letter, stream)
        if outcome is None:
            continue  # another redrive or purge deleted the letter since it was read
        if stream is None:
            replayed.setdefault(letter.run, []).append(letter.entry_id)
        else:
            report.new_ids.append(_text(outcome[0]))

    for replay_run, entry_ids in replayed.items():
        ordered = sorted(entry_ids, key=entry_key)
        report.replays.append(ReplayRedo(replay_run, len(ordered), ordered[0], ordered[-1]))
    return report


def redrive(client: redis.Redis, keys: StreamKeys, letter_ids: list[str] | None = None, *,
            run: str | None = None) -> list[str]:
    """Redrive as ``redrive_letters`` does, and return only the entry ids added for live letters."""
    return redrive_letters(client, keys, letter_ids, run=run).new_ids


def _choose_all(client: redis.Redis, keys: StreamKeys, partitions: int, run: str | None,
                report: RedriveReport) -> list[tuple[str, DeadLetter, str | None]]:
    """Return ``(letter id, letter, destination)`` for every letter of ``run`` (any run when None) that can be redriven."""
    chosen = []
    runs_present = set()
    for letter_id, letter in list_letter_entries(client, keys):
        if isinstance(letter, UnreadableLetter):
            # No payload to add back and no run to check, so it stays in the stream like any unredrivable letter.
            report.unredrivable += 1
            continue
        runs_present.add(letter.run)
        if run is not None and letter.run != run:
            report.other_runs += 1
            continue
        try:
            chosen.append((letter_id, letter, _destination(client, keys, partitions, letter_id, letter)))
        except RedriveError:
            report.unredrivable += 1
    if run is not None and run not in runs_present:
        raise RunMismatchError(f"--run {run!r}: {_no_letter_of_run(keys, runs_present)}")
    return chosen


def _choose_named(client: redis.Redis, keys: StreamKeys, partitions: int, letter_id: str,
                  run: str | None) -> tuple[str, DeadLetter, str | None]:
    letter = _read_letter(client, keys, letter_id)
    if run is not None and letter.run != run:
        raise RunMismatchError(f"dead letter {letter_id} belongs to run {letter.run!r}, not {run!r}; "
                               f"pass --run {letter.run} or leave --run out")
    return letter_id, letter, _destination(client, keys, partitions, letter_id, letter)


def _no_letter_of_run(keys: StreamKeys, runs_present: set[str]) -> str:
    if not runs_present:
        return f"{keys.dead_letters} holds no dead letters"
    names = ", ".join(sorted(runs_present))
    return f"no dead letter in {keys.dead_letters} belongs to that run; runs present: {names}"


def _read_letter(client: redis.Redis, keys: StreamKeys, letter_id: str) -> DeadLetter:
    entries = client.xrange(keys.dead_letters, min=letter_id, max=letter_id)
    if not entries:
        raise RedriveError(f"dead letter {letter_id} not found; list them with `rewardpilot dlq list`")
    letter = _readable_letter(entries[0][1])
    if letter is None:
        raise RedriveError(f"dead letter {letter_id} cannot be redriven: its JSON is not a dead letter this "
                           "version reads (see `rewardpilot dlq list`); delete it with `rewardpilot dlq purge`")
    return letter


def _destination(client: redis.Redis, keys: StreamKeys, partitions: int, letter_id: str,
                 letter: DeadLetter) -> str | None:
    """Return the stream to XADD a live letter onto, or None for a replay letter whose entry a replay can read again."""
    if letter.run == LIVE_RUN:
        return target_stream(keys, partitions, letter_id, letter)

    entry_present = bool(_FULL_ENTRY_ID.match(letter.entry_id)) and bool(
        client.xrange(letter.stream, min=letter.entry_id, max=letter.entry_id))
    if not entry_present:
        raise RedriveError(
            f"dead letter {letter_id} of run {letter.run!r}: its entry {letter.entry_id!r} is no longer in "
            f"{letter.stream!r} (trimmed or deleted), so a replay cannot process it again; "
            "delete it with `rewardpilot dlq purge`"
        )
    return None


def target_stream(keys: StreamKeys, partitions: int, letter_id: str, letter: DeadLetter) -> str:
    """Return the stream a live dead letter is redriven onto; raise RedriveError when there is none.

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
        "there. Delete it with `rewardpilot dlq purge`, then publish the corrected transaction with "
        "`rewardpilot publish FILE --dedup-window 0`, because the producer skips a transaction_id "
        "it published within its dedup window"
    )


def _transaction_field(data: str, name: str) -> str | None:
    """Return a string field of a transaction payload, or None when it is missing or unreadable."""
    try:
        value = json.loads(data).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _marker_keys(keys: StreamKeys, letter: DeadLetter) -> list[str]:
    """Return the letter's run's two possible marker keys: by transaction_id, then by entry id."""
    entry_marker = keys.result_marker(letter.run, f"entry:{letter.entry_id}")
    transaction_id = transaction_id_of(letter)
    transaction_marker = keys.result_marker(letter.run, transaction_id) if transaction_id else entry_marker
    return [transaction_marker, entry_marker]


def _release(release: Script, client, keys: StreamKeys, letter_id: str, letter: DeadLetter,
             stream: str | None):
    """Run the release script for one letter on ``client`` (a client or pipeline), with an XADD onto ``stream`` if given."""
    script_keys = [keys.dead_letters, *_marker_keys(keys, letter)]
    args = [letter_id, letter.entry_id]
    if stream is not None:
        script_keys.append(stream)
        args.append(letter.payload["data"])
    return release(keys=script_keys, args=args, client=client)


@dataclass(frozen=True)
class PurgeCounts:
    """Counts of one purge: dead letters deleted, and outcome markers deleted because they still had those entry ids."""

    letters: int = 0
    markers: int = 0


def newest_letter_id(client: redis.Redis, keys: StreamKeys) -> str | None:
    """Return the id of the newest dead letter, or None when there are none."""
    newest = client.xrevrange(keys.dead_letters, count=1)
    return _text(newest[0][0]) if newest else None


def purge(client: redis.Redis, keys: StreamKeys, *, through_id: str | None = None,
          run: str | None = None) -> PurgeCounts:
    """Delete the dead letters up to ``through_id`` (default: the newest now) and their outcome markers.

    Deleting a letter's markers lets its run process a transaction with the
    same transaction_id when it is published again. Letters added after
    ``through_id`` are kept. With ``run``, only that run's letters are
    deleted. A letter whose JSON cannot be read is deleted without touching
    any marker, except with ``run``: it names no run, so it is kept.
    """
    through_id = through_id or newest_letter_id(client, keys)
    if through_id is None:
        return PurgeCounts()

    release = client.register_script(_RELEASE_SCRIPT)
    letters = markers = 0
    cursor = "-"
    while True:
        # The cursor moves past each chunk, because letters of other runs stay in the stream.
        entries = client.xrange(keys.dead_letters, min=cursor, max=through_id, count=READ_CHUNK)
        if not entries:
            return PurgeCounts(letters, markers)
        cursor = "(" + _text(entries[-1][0])
        pipe = client.pipeline(transaction=False)
        for letter_id, fields in entries:
            letter = _readable_letter(fields)
            if letter is None:
                if run is None:
                    pipe.xdel(keys.dead_letters, letter_id)
                continue
            if run is not None and letter.run != run:
                continue
            _release(release, pipe, keys, _text(letter_id), letter, None)
        for outcome in pipe.execute():
            if isinstance(outcome, int):  # XDEL of an unreadable letter
                letters += outcome
            elif outcome is not None:
                letters += 1
                markers += int(outcome[1])

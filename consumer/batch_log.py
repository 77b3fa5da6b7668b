"""Log fields about one batch: its identity, and the errors of its dead letters."""

from __future__ import annotations

from rewardpilot.models import DeadLetter

MAX_ERROR_CHARACTERS = 300  # the maximum length of each error message repeated in a log line


def distinct_errors(letters: list[DeadLetter], limit: int = 3) -> list[str]:
    """Return up to ``limit`` distinct error messages of ``letters``, in their order, each cut to ``MAX_ERROR_CHARACTERS``."""
    errors: list[str] = []
    for letter in letters:
        message = letter.error
        if len(message) > MAX_ERROR_CHARACTERS:
            message = message[:MAX_ERROR_CHARACTERS] + "..."
        if message not in errors:
            errors.append(message)
            if len(errors) == limit:
                break
    return errors


def entry_id_bounds(entry_ids: list[str]) -> tuple[str, str]:
    """Return the first and last of ``entry_ids``, which are in stream order.

    A batch is one stream's entries from one XREADGROUP or XAUTOCLAIM reply,
    and both reply in stream order, so the ids are not parsed: this runs
    for every batch.
    """
    return entry_ids[0], entry_ids[-1]


def batch_log_fields(entry_ids: list[str], stream: str | None = None) -> dict:
    """Return the log fields that identify a batch: its first and last entry ids, its size and, if given, its stream.

    ``stream`` names a partition stream, where the ids alone are ambiguous.
    """
    if not entry_ids:
        return {"batch_entries": 0}
    first, last = entry_id_bounds(entry_ids)
    fields = {"batch_first_entry_id": first, "batch_last_entry_id": last, "batch_entries": len(entry_ids)}
    if stream is not None:
        fields["batch_stream"] = stream
    return fields

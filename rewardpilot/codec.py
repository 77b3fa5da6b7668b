"""How records are laid out in stream entries.

A transaction entry has one field, ``data``, holding the transaction as JSON
(``Transaction.model_dump_json``). A result entry has ``data`` with the
recommendation as JSON plus ``user_id`` and ``transaction_id`` fields so that
filters need not parse the JSON. One JSON field keeps XADD and XREADGROUP
replies small and lets pydantic validate straight from bytes.
"""

from __future__ import annotations

from datetime import datetime, timezone

from rewardpilot.models import Recommendation, Transaction

DATA = "data"


def encode_transaction(transaction: Transaction) -> dict[str, str]:
    # The model's serializer writes the same JSON as model_dump_json() with no
    # options, and skipping that method's argument handling saves about a third
    # of the time (pydantic 2.14).
    return {DATA: transaction.__pydantic_serializer__.to_json(transaction).decode()}


def decode_transaction(fields: dict) -> Transaction:
    """Validate a transaction entry; raises pydantic.ValidationError or KeyError."""
    raw = fields.get(DATA) if DATA in fields else fields.get(DATA.encode())
    if raw is None:
        raise KeyError(f"entry has no {DATA!r} field")
    return Transaction.model_validate_json(raw)


def encode_result(recommendation: Recommendation) -> dict[str, str]:
    return {
        DATA: recommendation.model_dump_json(),
        "user_id": recommendation.user_id,
        "transaction_id": recommendation.transaction_id,
    }


def decode_result(fields: dict) -> Recommendation:
    raw = fields.get(DATA) if DATA in fields else fields.get(DATA.encode())
    return Recommendation.model_validate_json(raw)


def entry_time(entry_id: str | bytes) -> datetime:
    """Return the server time at which an entry was added, from its stream id."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    milliseconds = int(entry_id.split("-", 1)[0])
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc)

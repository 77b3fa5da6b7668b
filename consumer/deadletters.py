"""Building dead-letter records: the original payload plus why it can never succeed."""

from __future__ import annotations

from datetime import datetime, timezone

from consumer.recommenders import ItemError
from rewardpilot.models import DeadLetter, Transaction


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def from_entry(entry_id: str, stream: str, fields: dict, *, reason: str, error_type: str,
               error: str, consumer: str, attempts: int = 1,
               http_status: int | None = None) -> DeadLetter:
    """A dead letter for an entry whose payload could not be used as it is."""
    now = datetime.now(timezone.utc)
    return DeadLetter(
        entry_id=entry_id, stream=stream,
        payload={_text(key): _text(value) for key, value in fields.items()},
        reason=reason, error_type=error_type, error=error[:2000], http_status=http_status,
        attempts=attempts, consumer=consumer, first_failure_at=now, last_failure_at=now,
    )


def from_item_error(entry_id: str, stream: str, transaction: Transaction, error: ItemError, *,
                    consumer: str, attempts: int = 1) -> DeadLetter:
    """A dead letter for a transaction the recommender rejected permanently."""
    now = datetime.now(timezone.utc)
    return DeadLetter(
        entry_id=entry_id, stream=stream,
        payload={"data": transaction.model_dump_json()},
        reason=error.reason, error_type=error.error_type, error=error.message[:2000],
        http_status=error.http_status, attempts=max(attempts, error.attempts), consumer=consumer,
        first_failure_at=error.first_failure_at or now, last_failure_at=now,
        transaction_id=transaction.transaction_id,
    )

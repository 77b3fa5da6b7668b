"""Building a ``Transaction`` from input in canonical form, without its Python validators.

``Transaction`` validation calls four Python field validators from pydantic's
Rust core, about 40% of the time it takes to validate one entry from JSON
(pydantic 2.14). Most input needs none of their conversions: the readers
have already stripped the text and parsed the amount and the time, and the
entries on the stream are ``model_dump_json`` documents. The functions here
accept such input and build the same ``Transaction`` faster. For any other
input they return None, and the caller runs full validation, which also
writes the error messages.

For every input they accept, the result equals what full validation returns:
the same field values (``==``), the same ``model_dump_json`` and the same
``model_fields_set``. They never accept an input that full validation
rejects. tests/test_canonical.py and tests/test_fast_validation.py check
both with generated input.
"""

from __future__ import annotations

import types
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

import pydantic_core
from pydantic import BaseModel
from pydantic_core import core_schema

from rewardpilot.models import (
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_AMOUNT_USD, MAX_CATEGORY_LENGTH, MAX_ID_LENGTH, MAX_MERCHANT_LENGTH,
    Transaction,
)
from rewardpilot.money import to_cents

_UTC = timezone.utc
_FIELD_NAMES = frozenset(Transaction.model_fields)
_BASIC_FIELD_NAMES = frozenset(
    ("transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"),
)
# Every field with its default, and None for the required fields and
# timestamp, whose values canonical_transaction always sets. The garbage
# collector tracks none of these values, so it does not track a copy of this
# dict either, as long as the values put in are of untracked types (str,
# Decimal, datetime).
_DEFAULTS = {
    name: None if field.is_required() or field.default_factory is not None else field.default
    for name, field in Transaction.model_fields.items()
}

_new_object = object.__new__
_set_attribute = object.__setattr__  # Transaction is frozen, so its own __setattr__ raises


def _slot_setter(name: str) -> Callable[[object, object], None]:
    """Return a function that sets the attribute ``name`` of a model, as ``object.__setattr__`` does.

    pydantic 2 declares these attributes as slots of BaseModel. Calling the
    slot's own setter skips the attribute lookup that ``object.__setattr__``
    makes, about 400 instructions a call (CPython 3.11, callgrind).
    """
    slot = BaseModel.__dict__.get(name)
    if isinstance(slot, types.MemberDescriptorType):
        return slot.__set__
    return lambda model, value: _set_attribute(model, name, value)


_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")


def canonical_transaction(values: dict) -> Transaction | None:
    """Build a ``Transaction`` from the field values a reader produced, or return None to ask for full validation.

    The fast path accepts these values:

    - text that is stripped, within the length limits and valid Unicode
    - an amount that is a finite ``Decimal`` above 0 and at most
      ``MAX_AMOUNT_USD``, and not below half a cent
    - an MCC of exactly 4 ASCII digits, an empty one, or None
    - a timestamp that is a ``datetime`` in ``timezone.utc``, not before
      ``EARLIEST_TIMESTAMP`` and before ``LATEST_TIMESTAMP``
    - a currency and a merchant_country of ASCII letters
    - card_used as stripped text, or None

    A dict with any other key, or without one of the required fields, is
    declined.
    """
    get = values.get
    transaction_id = get("transaction_id")
    user_id = get("user_id")
    merchant = get("merchant")
    category = get("category", "")
    # str.strip removes every character that pydantic's str_strip_whitespace
    # removes (and U+001C to U+001F besides), so text it leaves alone is left
    # alone by pydantic. The checks are written out for these four fields
    # because a function call per field costs about as much as its checks.
    if not (
        type(transaction_id) is str and type(user_id) is str and type(merchant) is str and type(category) is str
        and 0 < len(transaction_id) <= MAX_ID_LENGTH and 0 < len(user_id) <= MAX_ID_LENGTH
        and 0 < len(merchant) <= MAX_MERCHANT_LENGTH and len(category) <= MAX_CATEGORY_LENGTH
        and transaction_id.strip() == transaction_id and user_id.strip() == user_id
        and merchant.strip() == merchant and category.strip() == category
    ):
        return None
    text = transaction_id + user_id + merchant + category
    if not text.isascii() and not is_encodable(text):  # joining never pairs two lone surrogates
        return None

    # The steps of Transaction._parse_amount for a Decimal: Decimal(str(value))
    # is the same Decimal, so only the checks and the rounding remain.
    amount_usd = get("amount_usd")
    if not (type(amount_usd) is Decimal and amount_usd.is_finite() and 0 < amount_usd <= MAX_AMOUNT_USD):
        return None
    amount_usd = to_cents(amount_usd)
    if not amount_usd:
        return None  # below half a cent: full validation rejects it with its message

    # Validation keeps an aware datetime and converts it to timezone.utc, which
    # returns a datetime already in timezone.utc unchanged. It rejects one before
    # EARLIEST_TIMESTAMP or from LATEST_TIMESTAMP on, so those are declined here.
    timestamp = get("timestamp")
    if not (type(timestamp) is datetime and timestamp.tzinfo is _UTC and not timestamp.fold
            and EARLIEST_TIMESTAMP <= timestamp < LATEST_TIMESTAMP):
        return None

    mcc = get("mcc")
    if mcc is not None:
        if type(mcc) is not str:
            return None
        if not mcc:
            mcc = None  # an empty MCC means none, as in Transaction._parse_mcc
        elif not (len(mcc) == 4 and mcc.isascii() and mcc.isdigit()):
            return None

    fields_set = set(values)
    if not fields_set <= _FIELD_NAMES:
        return None  # a key that is not a field

    # Copying a dict of all fields costs less than building one from a literal,
    # and keeps the fields in declaration order, as in a validated model.
    fields = _DEFAULTS.copy()
    fields["transaction_id"] = transaction_id
    fields["user_id"] = user_id
    fields["merchant"] = merchant
    fields["category"] = category
    fields["amount_usd"] = amount_usd
    fields["mcc"] = mcc
    fields["timestamp"] = timestamp
    if not fields_set <= _BASIC_FIELD_NAMES and not _add_optional_fields(values, fields):
        return None

    # The steps of _build, written out because a call costs as much as two of them.
    transaction = _new_object(Transaction)
    _set_attribute(transaction, "__dict__", fields)
    _set_fields_set(transaction, fields_set)
    _set_extra(transaction, None)
    _set_private(transaction, None)
    return transaction


def _add_optional_fields(values: dict, fields: dict) -> bool:
    """Put the checked currency, merchant_country and card_used into ``fields``, or return False to decline.

    The readers fill no other field, so a value for any of the four fields
    of a converted amount is declined.
    """
    get = values.get
    if get("original_amount") is not None or get("original_currency") is not None:
        return False
    if get("usd_per_unit") is not None or get("rate_date") is not None:
        return False

    currency = get("currency", "USD")
    if type(currency) is not str:
        return False
    if currency != "USD":
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
            return False
        fields["currency"] = currency.upper()

    merchant_country = get("merchant_country")
    if merchant_country is not None:
        if not (type(merchant_country) is str and len(merchant_country) == 2
                and merchant_country.isascii() and merchant_country.isalpha()):
            return False
        fields["merchant_country"] = merchant_country.upper()

    card_used = get("card_used")
    if card_used is not None:
        if not (type(card_used) is str and len(card_used) <= MAX_CATEGORY_LENGTH and card_used.strip() == card_used
                and (card_used.isascii() or is_encodable(card_used))):
            return False
        fields["card_used"] = card_used
    return True


def _build(fields: dict, fields_set: set) -> Transaction:
    """Create a ``Transaction`` with the four attributes that pydantic's validator sets."""
    transaction = _new_object(Transaction)
    _set_attribute(transaction, "__dict__", fields)
    _set_fields_set(transaction, fields_set)
    _set_extra(transaction, None)
    _set_private(transaction, None)
    return transaction


def is_encodable(text: str) -> bool:
    """Return whether ``text`` is valid Unicode; pydantic rejects a string with a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _canonical_json_validator() -> pydantic_core.SchemaValidator:
    """Return a validator of Transaction's fields that replaces the Python validators with stricter checks.

    The other eleven fields keep the schemas of Transaction itself, so they
    are validated exactly as in full validation. The validator checks the
    fields only, because pydantic would reuse Transaction's own validator
    for a schema that names the Transaction class.
    """
    schema = Transaction.__pydantic_core_schema__
    fields = dict(schema["schema"]["fields"])
    # An amount as model_dump_json writes it, with two decimal places, so that
    # rounding to cents in _parse_amount would not change it. pydantic strips
    # the string of surrounding whitespace here, and _parse_amount strips at
    # least the same characters, so both read the same number.
    fields["amount_usd"] = core_schema.model_field(core_schema.chain_schema([
        core_schema.str_schema(pattern=r"^[0-9]{1,8}\.[0-9]{2}$"),
        core_schema.decimal_schema(gt=0, le=MAX_AMOUNT_USD),
    ]))
    # Four ASCII digits are what _parse_mcc returns unchanged.
    fields["mcc"] = core_schema.model_field(core_schema.with_default_schema(
        core_schema.nullable_schema(core_schema.str_schema(pattern=r"^[0-9]{4}$")), default=None,
    ))
    # A UTC time as model_dump_json writes it. datetime.fromisoformat returns
    # it in timezone.utc, as _timestamp_in_utc does, and raises ValueError for
    # a date that does not exist. The year is 19xx or 2000 to 8999, because full
    # validation rejects a time before EARLIEST_TIMESTAMP (1900-01-01 UTC) or from
    # LATEST_TIMESTAMP (9000-01-01 UTC) on.
    # The timestamp is not stripped, because full validation rejects
    # surrounding spaces. Without a timestamp the default factory would give
    # the current time, so a missing one is declined.
    fields["timestamp"] = core_schema.model_field(core_schema.chain_schema([
        core_schema.str_schema(
            pattern=r"^(19|[2-8][0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?(Z|\+00:00)$",
            strip_whitespace=False,
        ),
        core_schema.no_info_plain_validator_function(datetime.fromisoformat),
    ]))
    return pydantic_core.SchemaValidator(
        core_schema.model_fields_schema(fields, model_name=schema["schema"]["model_name"]),
        config=schema["config"],
    )


_CANONICAL_JSON = _canonical_json_validator()


def transaction_from_json(data: bytes | str) -> Transaction | None:
    """Build a ``Transaction`` from a ``model_dump_json`` document, or return None to ask for full validation."""
    try:
        # The middle item is the extra keys, always None because they are ignored.
        fields, _, fields_set = _CANONICAL_JSON.validate_json(data)
    except pydantic_core.ValidationError:
        return None
    return _build(fields, fields_set)

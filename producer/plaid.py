"""A reader of Plaid transaction responses saved as JSON.

Two responses are read: ``/transactions/sync`` (``added``, ``modified`` and
``removed`` arrays) and ``/transactions/get`` (a ``transactions`` array).
Both may carry ``accounts``, whose ``name`` and ``mask`` name the card used.
Field meanings follow Plaid's API reference for the Transaction object:

* ``amount`` is positive when money leaves the account, so a positive amount
  is a purchase and a negative one a refund or credit, which is skipped.
* ``pending`` transactions are skipped, because Plaid replaces each pending
  transaction with a posted one under a new ``transaction_id``; publishing
  both would recommend the same purchase twice.
* ``removed`` entries name transactions Plaid deleted; each is recorded as
  skipped so nothing in the file goes unaccounted for.

``Row.line`` is the entry's position in the file, counting ``added``, then
``modified``, then ``removed`` (or ``transactions``) from 1, and each error
names the entry as ``added[3].amount``.

``iso_currency_code`` is an ISO 4217 code and ``location.country`` an ISO
3166-1 alpha-2 code, per the same reference, so other values, such as a
country's name, reject the entry with the code to write.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterator

from producer.bank_layouts import (
    DEFAULT_USER, PLAID_CATEGORY_FIELDS, PLAID_MERCHANT_FIELDS, PLAID_NOT_PURCHASE_PREFIXES, PLAID_NOT_PURCHASES,
    PLAID_TIME_FIELDS, PLAID_UNOFFICIAL_CURRENCY,
)
from producer.documents import DocumentReader
from producer.errors import InputError, InvalidValueError, RowError
from producer.layouts import validate_transaction
from producer.readers import Outcome, Rejected, Row, Skipped
from producer.values import check_code, format_amount, parse_timestamp

ARRAYS = ("added", "modified", "removed", "transactions")


def looks_like_plaid(head: bytes) -> bool:
    """Return whether the first bytes of a file open a JSON object with a Plaid transactions array."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not text.startswith(b"{"):
        return False
    return any(f'"{name}"'.encode() in head for name in ("added", "transactions"))


class PlaidReader(DocumentReader):
    """Read a Plaid ``/transactions/sync`` or ``/transactions/get`` response and yield an ``Outcome`` per entry.

    Raises ``InputError`` when the file is not a JSON object holding one of
    the transaction arrays.
    """

    format = "plaid"
    position_name = "entry"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Position -> JSON path of each published entry whose amount was rounded, for the warning.
        self._amount_paths: dict[int, str] = {}

    def _read(self) -> Iterator[Outcome]:
        document = self._load()
        accounts = self._accounts(document.get("accounts"))

        position = 0
        for array in ARRAYS:
            entries = document.get(array)
            if entries is None:
                continue
            if not isinstance(entries, list):
                raise InputError(f"the Plaid response's {array!r} is a JSON {_kind(entries)}, not an array")
            for index, entry in enumerate(entries):
                position += 1
                where = f"{array}[{index}]"
                raw = _compact(entry)
                try:
                    if array == "removed":
                        yield self._removed(entry, position, where, raw)
                    else:
                        yield self._convert(entry, accounts, position, where, raw)
                except RowError as error:
                    yield Rejected(error, raw)

    def _load(self) -> dict:
        data = self.read_all().removeprefix(b"\xef\xbb\xbf")
        name = self.name or "the input"
        try:
            document = json.loads(data.decode("utf-8"), parse_float=Decimal)
        except UnicodeDecodeError as error:
            raise InputError(f"{name} is not valid UTF-8 (byte {error.start + 1}); save it as UTF-8") from None
        except (ValueError, RecursionError) as error:
            raise InputError(f"{name} is not valid JSON ({error}); save the whole Plaid response") from None
        if not isinstance(document, dict) or not any(array in document for array in ARRAYS):
            raise InputError(
                f"{name} is not a Plaid transactions response: expected a JSON object with "
                "added/modified/removed (/transactions/sync) or transactions (/transactions/get)"
            )
        return document

    def _accounts(self, accounts: object) -> dict[str, str]:
        """Return how each account_id is named as card_used: "name ...mask", or the name alone."""
        names: dict[str, str] = {}
        if not isinstance(accounts, list):
            return names
        for account in accounts:
            if not isinstance(account, dict) or not isinstance(account.get("account_id"), str):
                continue
            name = account.get("name") if isinstance(account.get("name"), str) else "plaid account"
            mask = account.get("mask")
            names[account["account_id"]] = f"{name} ...{mask}" if isinstance(mask, str) and mask else name
        return names

    def _removed(self, entry: object, position: int, where: str, raw: str) -> Outcome:
        transaction_id = entry.get("transaction_id") if isinstance(entry, dict) else None
        if not isinstance(transaction_id, str):
            raise RowError("the removed entry has no transaction_id", line=position,
                           column=f"{where}.transaction_id", value=raw[:200], fix="keep Plaid's response as it was")
        return Skipped(position, "removed by Plaid, not a purchase", raw, transaction_id)

    def _convert(self, entry: object, accounts: dict[str, str], position: int, where: str, raw: str) -> Outcome:
        if not isinstance(entry, dict):
            raise RowError(f"the entry is a JSON {_kind(entry)}, not an object", line=position, column=where,
                           value=raw[:200], fix="keep Plaid's response as it was")

        transaction_id = _text(entry, "transaction_id", position, where, required=True)
        try:
            return self._classify(entry, accounts, position, where, raw, transaction_id)
        except RowError as error:
            error.transaction_id = error.transaction_id or transaction_id  # the rejects file names the entry
            raise

    def _classify(self, entry: dict, accounts: dict[str, str], position: int, where: str, raw: str,
                  transaction_id: str) -> Outcome:
        """Record an entry that is no purchase as skipped; otherwise build its transaction."""
        if entry.get("pending") is True:
            return Skipped(position, "pending, not final until it posts; not a purchase yet", raw, transaction_id)

        not_purchase = _not_purchase_category(entry)
        if not_purchase is not None:
            name, reason = not_purchase
            return Skipped(position, f"{reason} ({name}), not a purchase", raw, transaction_id)

        amount = _amount(entry.get("amount"), position, where)
        if amount <= 0:
            what = "zero amount" if amount == 0 else f"refund or credit of {format_amount(-amount)}"
            return Skipped(position, f"{what}, not a purchase; recorded, not recommended", raw, transaction_id)

        merchant_key, merchant = _merchant(entry, position, where)
        time_key, timestamp = _timestamp(entry, position, where)
        values: dict = {
            "transaction_id": transaction_id,
            "user_id": self.user or DEFAULT_USER,
            "merchant": merchant,
            "category": _category(entry),
            "amount_usd": amount,
            "timestamp": timestamp,
        }
        # The Plaid key each Transaction field comes from, to name it in an error.
        keys = {"amount_usd": "amount", "merchant": merchant_key, "timestamp": time_key,
                "category": "personal_finance_category", "currency": "iso_currency_code",
                "merchant_country": "location.country", "card_used": "account_id"}

        currency = entry.get("iso_currency_code")
        if currency is None and entry.get("unofficial_currency_code") is not None:
            raise RowError(PLAID_UNOFFICIAL_CURRENCY, line=position, column=f"{where}.unofficial_currency_code",
                           value=entry.get("unofficial_currency_code"), fix="leave this transaction out")
        if currency is not None:
            values["currency"] = _code("currency", currency, position, f"{where}.iso_currency_code")

        location = entry.get("location")
        country = location.get("country") if isinstance(location, dict) else None
        if isinstance(country, str) and not country.strip():
            country = None  # an empty country, like null, leaves merchant_country unset
        if country is not None:
            values["merchant_country"] = _code("merchant_country", country, position,
                                               f"{where}.location.country")

        account_id = entry.get("account_id")
        if isinstance(account_id, str) and account_id:
            values["card_used"] = accounts.get(account_id, f"plaid account {account_id}")

        transaction = validate_transaction(values, position, lambda field: f"{where}.{keys.get(field, field)}")
        outcome = self.check_duplicate(transaction, position, raw, f"{where}.transaction_id")
        if isinstance(outcome, Row) and transaction.amount_usd != amount:
            self._amount_paths[position] = f"{where}.amount"
            self.note_sub_cent(position, amount)
        return outcome

    def position_text(self, line: int) -> str:
        """Name an entry whose amount was rounded by its JSON path, such as "added[3].amount"; others as "entry 4"."""
        path = self._amount_paths.get(line)
        return path if path is not None else super().position_text(line)


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _compact(entry: object) -> str:
    return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))[:2000]


def _text(entry: dict, key: str, position: int, where: str, *, required: bool = False) -> str:
    value = entry.get(key)
    if value is None or value == "":
        if required:
            raise RowError(f"{key} is missing", line=position, column=f"{where}.{key}", value=value,
                           fix="keep Plaid's response as it was")
        return ""
    if not isinstance(value, str):
        raise RowError(f"{key} is a JSON {_kind(value)}, not a string", line=position, column=f"{where}.{key}",
                       value=value, fix="keep Plaid's response as it was")
    return value


def _code(field: str, value: object, position: int, column: str) -> str:
    """Return a currency or country code of the entry; raise ``RowError`` naming the value and the code to write."""
    name = column.partition(".")[2]  # the Plaid key, such as location.country
    if not isinstance(value, str):
        raise RowError(f"{name} is a JSON {_kind(value)}, not a string", line=position, column=column,
                       value=value, fix=f"keep Plaid's response as it was, with {name} as text or null")
    try:
        check_code(field, value, name=name)
    except InvalidValueError as error:
        raise RowError(error.reason, line=position, column=column, value=value, fix=error.fix) from None
    return value


def _merchant(entry: dict, position: int, where: str) -> tuple[str, str]:
    """Return the first of ``PLAID_MERCHANT_FIELDS`` that is not empty and its key; raise ``RowError`` when all are."""
    *preferred, last = PLAID_MERCHANT_FIELDS
    for key in preferred:
        text = _text(entry, key, position, where)
        if text:
            return key, text
    return last, _text(entry, last, position, where, required=True)


def _amount(value: object, position: int, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise RowError(f"amount is {'missing' if value is None else 'a JSON ' + _kind(value)}, not a number",
                       line=position, column=f"{where}.amount", value=value, fix="keep Plaid's response as it was")
    amount = Decimal(value)
    if not amount.is_finite():
        raise RowError("amount is not a finite number", line=position, column=f"{where}.amount", value=value)
    return amount


def _not_purchase_category(entry: dict) -> tuple[str, str] | None:
    """Return the category that marks the entry as no purchase and the reason to record, or None.

    The primary category is checked first, then the detailed one by its
    prefix, which places an entry whose primary is empty or missing.
    """
    category = entry.get("personal_finance_category")
    if not isinstance(category, dict):
        return None
    primary = category.get("primary")
    if isinstance(primary, str) and primary in PLAID_NOT_PURCHASES:
        return primary, PLAID_NOT_PURCHASES[primary]
    detailed = category.get("detailed")
    if isinstance(detailed, str):
        for prefix, reason in PLAID_NOT_PURCHASE_PREFIXES.items():
            if detailed.startswith(prefix):
                return detailed, reason
    return None


def _category(entry: dict) -> str:
    """Return the most specific category text: personal_finance_category, else the legacy list's last item."""
    category = entry.get("personal_finance_category")
    if isinstance(category, dict):
        for key in PLAID_CATEGORY_FIELDS:
            if isinstance(category.get(key), str) and category[key]:
                return category[key]
    legacy = entry.get("category")
    if isinstance(legacy, list) and legacy and isinstance(legacy[-1], str):
        return legacy[-1]
    return ""


def _timestamp(entry: dict, position: int, where: str) -> tuple[str, datetime]:
    """Return the first of ``PLAID_TIME_FIELDS`` that the entry has, and when the purchase happened by it.

    A key whose value is null counts as absent, and one whose value is not a
    valid date rejects the entry.
    """
    for key in PLAID_TIME_FIELDS:
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RowError(f"{key} is a JSON {_kind(value)}, not a string", line=position, column=f"{where}.{key}",
                           value=value, fix="keep Plaid's response as it was")
        try:
            return key, parse_timestamp(value, formats=("iso",), zone=timezone.utc)[0]
        except ValueError as error:
            raise RowError.from_value_error(error, line=position, column=f"{where}.{key}", value=value) from None
    raise RowError("the entry has no date", line=position, column=f"{where}.date", value=None,
                   fix="keep Plaid's response as it was")


"""A tolerant reader of OFX and QFX statements, SGML 1.x and XML 2.x.

OFX 1.x starts with ``KEY:VALUE`` header lines (``OFXHEADER:100``,
``ENCODING``, ``CHARSET``) and its body is SGML, where leaf elements such as
``<TRNAMT>-5.50`` are never closed. OFX 2.x starts with an XML declaration
and ``<?OFX OFXHEADER="200" ...?>``, though some banks still write an SGML
body after it. The reader honours the declared encoding (USASCII with
CHARSET 1252, ISO-8859-1 or NONE, and UTF-8), then scans tags, so closed and
unclosed leaves both work.

Every ``<STMTTRN>`` of a bank (``STMTRS``) or credit-card (``CCSTMTRS``)
statement becomes one outcome. Per the OFX 2.1.1 specification (section
11.4.4.1), ``TRNAMT`` is negative for money out, so a negative amount is a
purchase and a positive one a credit. An entry whose ``TRNTYPE`` is not
a purchase (``NOT_PURCHASES``, and on a bank statement ``BANK_NOT_PURCHASES``)
is skipped whatever its sign. ``FITID`` is the bank's id for the
transaction and, with the account and the user, makes the transaction_id. ``SIC`` is a Standard Industrial
Classification code, not an ISO 18245 MCC, so it is not used as an MCC.

Amounts are in the statement's ``CURDEF`` unless the ``STMTTRN`` has a
``<CURRENCY>`` or ``<ORIGCURRENCY>`` aggregate (OFX 2.2 section 5.2, as
ofxstatement's ``Currency`` class and the Haskell ``ofx`` package document
it). Both hold ``CURSYM``, an ISO 4217 code, and ``CURRATE``, the units of
``CURDEF`` per unit of ``CURSYM``. With ``<CURRENCY>`` the amount is in
``CURSYM``, and ``CURRATE`` converts it to ``CURDEF``. With
``<ORIGCURRENCY>`` the amount is already in ``CURDEF``, and ``CURSYM`` is the
currency the purchase was made in. ``_currency_values`` applies these rules.
"""

from __future__ import annotations

import codecs
import html
import re
from bisect import bisect_right
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterator

import pydantic

from producer.bank_layouts import DEFAULT_USER
from producer.documents import DocumentReader
from producer.errors import InputError, InvalidValueError, RowError
from producer.layouts import row_digest
from producer.readers import Outcome, Rejected, Row, Skipped
from producer.values import check_code, date_fields_error, format_amount, parse_amount
from rewardpilot.models import DATE_ONLY_TIME, MAX_AMOUNT_USD, MAX_ID_LENGTH, Transaction
from rewardpilot.money import round_cash, to_cents

OFX_SUFFIXES = (".ofx", ".qfx", ".qbo")

# TRNTYPE values that are not card purchases, with the skip reason. The quoted
# definitions are the TRNTYPE table of OFX 2.1.1 (section 11.4.4.3) as
# open-source OFX parsers reproduce it. NOTE: the specification itself was not
# opened. CREDIT, DEBIT, POS ("point of sale debit or credit") and OTHER do not
# say what the money paid for, so the sign of TRNAMT decides them.
NOT_PURCHASES = {
    "INT": "interest",
    "DIV": "dividend",
    "FEE": "fee",
    "SRVCHG": "service charge",
    "DEP": "deposit",
    "DIRECTDEP": "direct deposit",
    # "ATM debit or credit": cash taken out or paid in, and on a card a cash advance, which earns no rewards.
    "ATM": "ATM withdrawal or deposit",
    "CASH": "cash withdrawal",
    "XFER": "transfer between accounts",
    "CHECK": "check",
    # "Electronic payment": on a bank account, money sent from the account
    # (a bill payment, a transfer to a person), and on a credit-card account,
    # a payment to the card. Neither is a purchase made with a card.
    # NOTE: a converter that writes PAYMENT for a debit-card purchase gets
    # those purchases skipped, each with this reason in the rejects file.
    "PAYMENT": "electronic payment, such as a bill payment, a transfer to a person or a payment to the card",
    # "Indicates the amount is under a hold", valid only in pending
    # transactions (STMTTRNP), so the amount has not posted.
    "HOLD": "amount on hold, not a posted transaction",
}

# TRNTYPE values that are not card purchases on a bank statement (STMTRS). There
# a "merchant initiated debit" (DIRECTDEBIT) is drawn from the account by ACH
# or a direct debit scheme, and a "repeating payment/standing order"
# (REPEATPMT) is sent by the bank on a schedule, so no card is used. The
# schwab-checking CSV preset skips ACH rows for the same reason. On a
# credit-card statement (CCSTMTRS) these types are charges to the card, such
# as a subscription, so they stay purchases.
# NOTE: no credit-card statement that uses these types was available to check.
BANK_NOT_PURCHASES = {
    "DIRECTDEBIT": "direct debit drawn from the bank account by the payee",
    "REPEATPMT": "standing order or repeating payment from the bank account",
}

# CHARSET values of OFX 1.x headers and the Python codecs that decode them.
CHARSETS = {
    "1252": "cp1252",
    "WINDOWS-1252": "cp1252",
    "ISO-8859-1": "latin-1",
    "8859-1": "latin-1",
    "LATIN1": "latin-1",
    # NONE means plain ASCII; cp1252 decodes ASCII and every stray byte too.
    "NONE": "cp1252",
}

_TAG = re.compile(r"<(/?)([A-Za-z0-9_.]+)\s*>([^<]*)")
_XML_ENCODING = re.compile(rb"""<\?xml[^>]*\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_LINE_END = re.compile(r"\r\n|\r|\n")
_OFX_TIME = re.compile(
    r"^(\d{8})(\d{6})?(?:[.:]\d{1,3})?(?:\[\s*([+-]?\d{1,2}(?:\.\d+)?)(?::[^\]]*)?\])?$"
)
# A CURRATE value once a decimal comma is made a point: digits with an optional decimal part.
_RATE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$", re.ASCII)

# The aggregates inside a STMTTRN that name the transaction's own currency.
CURRENCY_AGGREGATES = ("CURRENCY", "ORIGCURRENCY")
# An ISO 8601 date or date-time, which some converters write in place of an OFX date.
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?")

# The OFX date-time form (OFX 2.1.1 section 3.2.8.2), for the fix of an invalid date.
OFX_TIME_FORM = (
    "OFX dates are YYYYMMDD, optionally followed by the time HHMMSS, milliseconds .XXX and a time zone "
    "offset in brackets, such as 20260228 or 20260228120000[-5:EST]"
)


def looks_like_ofx(head: bytes) -> bool:
    """Return whether the first bytes of a file are an OFX header or an ``<OFX>`` element."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"OFXHEADER") or b"<OFX>" in head.upper() or b"<?OFX" in head.upper()


def detect_encoding(data: bytes) -> str:
    """Return the Python codec that the OFX header declares; raise ``InputError`` for an unknown one."""
    text = data.lstrip()
    if text.startswith(b"<?xml"):
        match = _XML_ENCODING.match(text)
        name = match.group(1).decode("ascii") if match else "UTF-8"
        return _codec(name, "the XML declaration's encoding")

    header = _v1_header(data)
    encoding = header.get("ENCODING", "USASCII").upper()
    if encoding in ("UTF-8", "UTF8", "UNICODE"):
        return "utf-8"
    charset = header.get("CHARSET", "NONE").upper()
    if charset in CHARSETS:
        return CHARSETS[charset]
    return _codec(charset, "the CHARSET header")


def _codec(name: str, where: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise InputError(
            f"{where} {name!r} is not an encoding Python knows; "
            "re-download the statement, or save it as UTF-8 with ENCODING:UTF-8"
        ) from None


def _v1_header(data: bytes) -> dict[str, str]:
    """Return the ``KEY:VALUE`` lines before the first ``<`` of an OFX 1.x file."""
    start = data.find(b"<")
    preamble = data if start < 0 else data[:start]
    header = {}
    for line in preamble.decode("ascii", "replace").splitlines():
        key, colon, value = line.partition(":")
        if colon:
            header[key.strip().upper()] = value.strip()
    return header


def _closes_next(text: str, position: int, name: str) -> bool:
    """Return whether ``</name>`` follows at ``position``: an empty leaf such as ``<MEMO></MEMO>``."""
    return text.startswith(f"</{name}>", position) or text[position:position + len(name) + 3].upper() == f"</{name}>"


def parse_ofx_time(text: str) -> datetime:
    """Parse an OFX date-time such as ``20140920170000[0:GMT]`` or ``20170508`` into UTC.

    The format is YYYYMMDD, optional HHMMSS, optional milliseconds and an
    optional ``[offset:zone]``; without an offset the time is UTC (OFX 2.1.1
    section 3.2.8.2). A date without a time is taken as noon
    (``DATE_ONLY_TIME``), so it keeps its calendar date in U.S. zones.
    Raises ``InvalidValueError`` with the reason, such as "February 2026 has
    28 days", apart from the fix, which gives the OFX form.
    """
    match = _OFX_TIME.match(text.strip())
    if match is None:
        raise InvalidValueError(f"{text!r} is not an OFX date", _form_fix(text))
    day, clock, offset = match.groups()
    clock = clock or DATE_ONLY_TIME.strftime("%H%M%S")
    fields = {"year": int(day[:4]), "month": int(day[4:6]), "day": int(day[6:]),
              "hour": int(clock[:2]), "minute": int(clock[2:4]), "second": int(clock[4:])}
    out_of_range = date_fields_error(text, fields)
    if out_of_range is not None:
        raise InvalidValueError(out_of_range.reason, f"{out_of_range.fix} ({OFX_TIME_FORM})")
    parsed = datetime(fields["year"], fields["month"], fields["day"], fields["hour"], fields["minute"],
                      fields["second"])
    hours = Decimal(offset) if offset else Decimal(0)
    if abs(hours) > 14:
        raise InvalidValueError(f"{text!r} has a time zone offset of {hours} hours, outside -14 to +14",
                                f"check the offset in brackets ({OFX_TIME_FORM})")
    zone = timezone(timedelta(hours=float(hours)))
    try:
        return parsed.replace(tzinfo=zone).astimezone(timezone.utc)
    except OverflowError:  # year 1 east of UTC, or year 9999 west of it
        raise InvalidValueError(f"{text!r} lies outside the dates Python can convert to UTC",
                                "check the year") from None


def _form_fix(text: str) -> str:
    """Return the fix for a value that is not in the OFX date form, with the OFX spelling of an ISO 8601 date."""
    iso = _ISO_DATE.match(text.strip())
    if iso is None:
        return f"write it as an OFX date ({OFX_TIME_FORM})"
    return f"write it as {''.join(part for part in iso.groups() if part)} ({OFX_TIME_FORM})"


def parse_ofx_amount(text: str) -> Decimal:
    """Parse ``TRNAMT``, whose decimal separator may be a point or a comma.

    The OFX specification (section 3.2.9.1, as the Haskell ``ofx`` package
    documents it) allows a point or a comma as the radix point, and amounts
    should not group digits. So a single comma without a point is
    the decimal separator: "-5,50" is -5.50, and "-12,345" is -12.345, as a
    currency with three decimal places writes it. A value with a point or
    with several commas goes to ``parse_amount`` as it is, which reads the
    commas as thousands separators ("1,234.56").
    """
    value = text.strip()
    if value.count(",") == 1 and "." not in value:
        value = value.replace(",", ".")
    return parse_amount(value)


class OfxReader(DocumentReader):
    """Read one OFX or QFX document and yield an ``Outcome`` per ``STMTTRN``.

    ``Row.line`` is the line on which the ``<STMTTRN>`` starts. Raises
    ``InputError`` when the document has no ``<OFX>`` element or declares an
    unknown encoding.
    """

    format = "ofx"

    def _read(self) -> Iterator[Outcome]:
        # Digest -> how many entries without a FITID had it so far, for their transaction_ids.
        # One entry per distinct such entry, about 100 bytes each (CPython 3.11), which is less than
        # the entry's own text in the document that is held in memory anyway.
        self._repeats: dict[str, int] = {}
        data = self.read_all().removeprefix(b"\xef\xbb\xbf")
        self.encoding = detect_encoding(data)
        text = data.decode(self.encoding, "replace")

        start = text.upper().find("<OFX>")
        if start < 0:
            raise InputError(f"{self.name or 'the input'} has no <OFX> element, so it is not an OFX statement")

        statement: dict[str, str] = {}
        organization = ""
        transaction: dict[str, str] | None = None
        transaction_start = 0
        # The CURRENCY or ORIGCURRENCY aggregate open inside the transaction, whose leaves are
        # stored as "CURRENCY.CURSYM" and "CURRENCY.CURRATE".
        aggregate: str | None = None
        count = 0

        for match in _TAG.finditer(text, start):
            closing, name, content = match.group(1), match.group(2).upper(), match.group(3)
            value = html.unescape(content.strip())

            if closing:
                if name == "STMTTRN" and transaction is not None:
                    yield self._outcome(transaction, statement, organization, transaction_start, text, match.end())
                    transaction = None
                    count += 1
                if name in CURRENCY_AGGREGATES:
                    aggregate = None
                continue

            if name in ("STMTRS", "CCSTMTRS"):
                statement = {"kind": name}
            elif name == "STMTTRN":
                if transaction is not None:
                    # An unclosed STMTTRN ends where the next one begins.
                    yield self._outcome(transaction, statement, organization, transaction_start, text, match.start())
                    count += 1
                transaction = {}
                transaction_start = match.start()
                aggregate = None
            elif transaction is not None and name in CURRENCY_AGGREGATES:
                aggregate = name
                transaction.setdefault(name, "")
            elif value or _closes_next(text, match.end(), name):
                if transaction is not None:
                    if aggregate is not None and name in ("CURSYM", "CURRATE"):
                        name = f"{aggregate}.{name}"
                    transaction.setdefault(name, value)
                elif name in ("CURDEF", "ACCTID"):
                    statement[name] = value
                elif name == "ORG":
                    organization = value

        if transaction is not None:
            yield self._outcome(transaction, statement, organization, transaction_start, text, len(text))
            count += 1
        if count == 0:
            self.warn(f"{self.name or 'the input'} holds no <STMTTRN> transactions")

    def _outcome(self, fields: dict[str, str], statement: dict[str, str], organization: str,
                 offset: int, text: str, end: int) -> Outcome:
        line = bisect_right(self._line_starts(text), offset)
        raw = text[offset:end].strip()
        try:
            return self._convert(fields, statement, organization, line, raw)
        except RowError as error:
            return Rejected(error, raw)

    def _line_starts(self, text: str) -> list[int]:
        cached = getattr(self, "_starts", None)
        if cached is None:
            cached = self._starts = [0] + [match.end() for match in _LINE_END.finditer(text)]
        return cached

    def _convert(self, fields: dict[str, str], statement: dict[str, str], organization: str,
                 line: int, raw: str) -> Outcome:
        for name, value in fields.items():
            if "\ufffd" in value:
                raise RowError(
                    f"<{name}> contains bytes that are invalid in {self.encoding}",
                    line=line, column=name, value=value,
                    fix="fix the CHARSET or ENCODING header to match the file, or save it as UTF-8",
                )

        account = statement.get("ACCTID", "")
        transaction_id = self._transaction_id(account, fields.get("FITID", ""), line, raw)
        try:
            return self._classify(fields, statement, organization, line, raw, account, transaction_id)
        except RowError as error:
            error.transaction_id = error.transaction_id or transaction_id  # the rejects file names the entry
            raise

    def _transaction_id(self, account: str, fitid: str, line: int, raw: str) -> str:
        """Build the transaction_id of one entry: ``ofx-<last four of ACCTID>-<FITID>-<digest>``.

        The digest (``row_digest``) covers the user_id, the whole ACCTID and
        the FITID, so two users who publish the same statement get different
        ids, and so do two accounts whose numbers end in the same four digits.
        An id longer than ``MAX_ID_LENGTH`` leaves the FITID out, because the
        digest alone still distinguishes the entries.

        An entry without a FITID gets ``ofx-<last four>-<digest>-<repeat>``,
        where the digest covers the user_id, the ACCTID and the entry's raw
        text, and the repeat count is 0 for the first entry with that digest
        in the document and 1, 2, ... for each identical entry after it. The
        line is left out, so a later download whose entries start on other
        lines gives the same entries the same ids.
        """
        user = self.user or DEFAULT_USER
        suffix = account[-4:] or "account"
        if not fitid:
            digest = row_digest(user, account, raw)
            repeat = self._repeats.get(digest, 0)
            self._repeats[digest] = repeat + 1
            return f"ofx-{suffix}-{digest}-{repeat}"
        digest = row_digest(user, account, fitid)
        transaction_id = f"ofx-{suffix}-{fitid}-{digest}"
        if len(transaction_id) > MAX_ID_LENGTH:
            transaction_id = f"ofx-{suffix}-{digest}"
        return transaction_id

    def _classify(self, fields: dict[str, str], statement: dict[str, str], organization: str, line: int,
                  raw: str, account: str, transaction_id: str) -> Outcome:
        """Record a statement entry that is no purchase as skipped; otherwise build its transaction."""
        kind = fields.get("TRNTYPE", "").upper()
        if fields.get("CORRECTACTION", "").upper() == "DELETE":
            return Skipped(line, f"correction that deletes transaction {fields.get('CORRECTFITID', '')!r}, "
                                 "not a purchase", raw, transaction_id)
        reason = NOT_PURCHASES.get(kind)
        if reason is None and statement.get("kind") == "STMTRS":
            reason = BANK_NOT_PURCHASES.get(kind)
        if reason is not None:
            return Skipped(line, f"{reason} (TRNTYPE: {kind}), not a purchase", raw, transaction_id)

        amount_text = fields.get("TRNAMT", "")
        try:
            amount = -parse_ofx_amount(amount_text)
        except ValueError as error:
            raise RowError.from_value_error(error, line=line, column="TRNAMT", value=amount_text) from None
        if amount <= 0:
            what = "zero amount" if amount == 0 else f"credit of {format_amount(-amount)}"
            return Skipped(line, f"{what}, not a purchase; recorded, not recommended", raw, transaction_id)

        stamp_field = "DTUSER" if fields.get("DTUSER") else "DTPOSTED"
        stamp = fields.get(stamp_field, "")
        if not stamp:
            raise RowError(f"the transaction has no <{stamp_field}>", line=line, column=stamp_field, value="",
                           fix=f"fill in the date the transaction posted ({OFX_TIME_FORM})")
        try:
            timestamp = parse_ofx_time(stamp)
        except InvalidValueError as error:
            raise RowError(f"<{stamp_field}> {error.reason}", line=line, column=stamp_field, value=stamp,
                           fix=error.fix) from None

        statement_currency = statement.get("CURDEF") or "USD"
        try:
            check_code("currency", statement_currency, name="<CURDEF>")
        except InvalidValueError as error:
            raise RowError(error.reason, line=line, column="CURDEF", value=statement_currency,
                           fix=f"{error.fix}, in the statement's <CURDEF>") from None

        merchant = fields.get("NAME") or fields.get("MEMO") or ""
        if not merchant:
            raise RowError("the transaction has neither <NAME> nor <MEMO>", line=line, column="NAME",
                           value="", fix="fill in the payee's name")

        values: dict = {
            "transaction_id": transaction_id,
            "user_id": self.user or DEFAULT_USER,
            "merchant": merchant,
            "timestamp": timestamp,
            # amount_usd and currency, and the original_* fields of an amount converted here.
            **self._currency_values(fields, statement, amount, line),
        }
        if account:
            holder = organization or ("card" if statement.get("kind") == "CCSTMTRS" else "account")
            values["card_used"] = f"{holder} ...{account[-4:]}"

        try:
            transaction = Transaction.model_validate(values)
        except pydantic.ValidationError as error:
            first = error.errors(include_url=False)[0]
            field = str(first["loc"][0]) if first["loc"] else "STMTTRN"
            raise RowError(first["msg"].removeprefix("Value error, "), line=line, column=field,
                           value=first.get("input"), fix="correct the value in the statement") from None
        outcome = self.check_duplicate(transaction, line, raw, "FITID")
        if isinstance(outcome, Row) and to_cents(amount) != amount:
            self.note_sub_cent(line, amount)
        return outcome

    def _currency_values(self, fields: dict[str, str], statement: dict[str, str], amount: Decimal,
                         line: int) -> dict:
        """Return ``amount_usd`` and ``currency`` for a purchase of ``amount`` (TRNAMT as read, made positive).

        Without a CURRENCY or ORIGCURRENCY aggregate, the amount is in the
        statement's CURDEF, and ``publish_file`` converts a CURDEF other
        than USD with --fx-rates. With one, see ``_foreign_amount`` and
        ``_original_currency``. Raises ``RowError`` for an aggregate that
        cannot be used. ``publish_file`` counts a row given
        ``original_currency`` here as converted.
        """
        statement_currency = statement.get("CURDEF") or "USD"
        present = [name for name in CURRENCY_AGGREGATES if name in fields]
        if not present:
            return {"amount_usd": amount, "currency": statement_currency}
        if len(present) > 1:
            raise RowError(
                "the transaction has both <CURRENCY> and <ORIGCURRENCY>, and OFX allows only one of them",
                line=line, column="CURRENCY", value=fields.get("CURRENCY.CURSYM", ""),
                fix="keep <CURRENCY> if TRNAMT is in the foreign currency, or <ORIGCURRENCY> if TRNAMT is "
                    "already in the statement's <CURDEF>",
            )

        aggregate = present[0]
        symbol = fields.get(f"{aggregate}.CURSYM", "")
        try:
            check_code("currency", symbol, name=f"<CURSYM> of <{aggregate}>")
        except InvalidValueError as error:
            raise RowError(error.reason, line=line, column=f"{aggregate}.CURSYM", value=symbol,
                           fix=error.fix) from None
        symbol = symbol.strip().upper()
        rate = self._rate(fields, aggregate, statement_currency, symbol, line)

        if symbol == statement_currency:
            return {"amount_usd": amount, "currency": statement_currency}
        if aggregate == "CURRENCY":
            return self._foreign_amount(amount, symbol, rate, statement, line)
        return _original_currency(amount, symbol, rate, statement_currency)

    def _rate(self, fields: dict[str, str], aggregate: str, statement_currency: str, symbol: str,
              line: int) -> Decimal | None:
        """Return the aggregate's CURRATE, or None when it has none; raise ``RowError`` for an invalid one."""
        text = fields.get(f"{aggregate}.CURRATE")
        if text is None:
            return None
        value = text.strip()
        if value.count(",") == 1 and "." not in value:
            value = value.replace(",", ".")
        if not _RATE.match(value) or Decimal(value) == 0:
            raise RowError(
                f"<CURRATE> {text!r} of <{aggregate}> is not a positive decimal number",
                line=line, column=f"{aggregate}.CURRATE", value=text,
                fix=f"write how many {statement_currency} one {symbol} buys, such as 1.0850, or delete the "
                    "<CURRATE> element so that --fx-rates converts the amount",
            )
        return Decimal(value)

    def _foreign_amount(self, amount: Decimal, symbol: str, rate: Decimal | None, statement: dict[str, str],
                        line: int) -> dict:
        """Return the values of a purchase whose amount is in ``symbol``, the CURSYM of a CURRENCY aggregate.

        The amount is rounded to cents, as every input amount is, and then
        multiplied by CURRATE into CURDEF and rounded to cents half-even, as
        ``rewardpilot.fx`` rounds a conversion. In a USD statement the
        result is the amount in USD, with the amount as read in
        ``original_amount`` and CURRATE in ``usd_per_unit``. In a statement
        in another currency the result is in CURDEF, and ``publish_file``
        converts it with --fx-rates as it converts the statement's other
        amounts. Without CURRATE, or without CURDEF, whose currency CURRATE
        is in, the amount stays in ``symbol`` for --fx-rates to convert. A
        USD amount needs no conversion.
        """
        if symbol == "USD" or rate is None or not statement.get("CURDEF"):
            return {"amount_usd": amount, "currency": symbol}

        statement_currency = statement["CURDEF"]
        original = to_cents(amount)
        converted = round_cash(original * rate)
        if converted <= 0 or converted > MAX_AMOUNT_USD:
            limit = "less than one cent" if converted <= 0 else f"above the amount limit of {MAX_AMOUNT_USD:,}"
            raise RowError(
                f"{original} {symbol} at the <CURRATE> of {rate} {statement_currency} per {symbol} is "
                f"{converted} {statement_currency}, {limit}",
                line=line, column="CURRENCY.CURRATE", value=str(rate),
                fix="check TRNAMT and the <CURRATE> of <CURRENCY>",
            )
        if statement_currency != "USD":
            return {"amount_usd": converted, "currency": statement_currency}
        # The purchase keeps its own currency, so the engine charges the card's foreign transaction fee.
        return {"amount_usd": converted, "currency": symbol, "original_amount": original,
                "original_currency": symbol, "usd_per_unit": rate}


def _original_currency(amount: Decimal, symbol: str, rate: Decimal | None, statement_currency: str) -> dict:
    """Return the values of a purchase made in ``symbol`` whose amount is already in ``statement_currency``.

    In a USD statement the purchase keeps ``symbol`` as its currency, so the
    engine charges the card's foreign transaction fee. ``original_currency``
    is set too, which marks the amount as converted already, so
    --fx-rates leaves it alone. With CURRATE, ``original_amount`` is the
    amount divided by CURRATE, rounded to cents half-even, and
    ``usd_per_unit`` is CURRATE. In a statement in another currency the
    amount is taken as CURDEF's, and ``publish_file`` converts it with
    --fx-rates as it converts the statement's other amounts.
    """
    if statement_currency != "USD" or symbol == "USD":
        return {"amount_usd": amount, "currency": statement_currency}
    values: dict = {"amount_usd": amount, "currency": symbol, "original_currency": symbol}
    if rate is not None:
        values["original_amount"] = round_cash(to_cents(amount) / rate)
        values["usd_per_unit"] = rate
    return values

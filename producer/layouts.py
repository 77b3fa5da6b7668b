"""Column mappings: how the columns of one CSV layout become a ``Transaction``.

A ``Layout`` names, for each ``Transaction`` field, the source column or a
template over several columns, plus the sign convention, the date layouts and
the rows to skip. The documented layout and the IBM TabFormer layout are
presets; a user describes any other layout in a small YAML or JSON file
(``load_layout``). ``detect_layout`` picks a preset from a header.

Templates are strings with ``{Column Name}`` placeholders. Three placeholders
are not columns (``ROW_PLACEHOLDERS``): ``{#line}`` is the line on which the
row starts, ``{#row_hash}`` is ``row_digest`` of the row's user_id and the raw
row, and ``{#repeat}`` is how many earlier rows of the same file had that same
digest, counting from 0.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Callable, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from producer.countries import COUNTRY_CODES, US_STATE_CODES
from producer.errors import InputError, InvalidValueError, RowError
from producer.values import (
    CODE_FIELDS, EMPTY_VALUE_FIX, US_DATE_FORMATS, check_code, format_amount, parse_amount, parse_timestamp,
)
from rewardpilot.canonical import canonical_transaction
from rewardpilot.models import Transaction
from rewardpilot.money import to_cents

FIELDS = (
    "transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc",
    "timestamp", "currency", "merchant_country", "card_used",
)
REQUIRED_FIELDS = ("transaction_id", "user_id", "merchant", "timestamp")
DEFAULT_TIMESTAMP_FORMATS = ("iso", *US_DATE_FORMATS)
TRANSFORMS = ("us_state_or_country",)

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# The template placeholders that are not column names, with what each gives.
ROW_PLACEHOLDERS = {
    "#line": "the line on which the row starts",
    "#row_hash": "a hash of the row's user_id and raw text",
    "#repeat": "how many identical earlier rows the file has, from 0",
}


def row_digest(user_id: str, *parts: str) -> str:
    """Return 16 hex digits of the BLAKE2b hash of a user_id and the text of one input entry.

    Generated transaction_ids end with this digest. The user_id is hashed
    with the entry, so the same row in two users' files gets two ids, while
    the same file read again for the same user gets the same ids and its
    re-publish is caught as a duplicate. Each part is hashed after its length,
    so no two different lists of parts give the same bytes.
    """
    hasher = hashlib.blake2b(digest_size=8)
    for part in (user_id, *parts):
        data = part.encode("utf-8", "surrogatepass")
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


def normalize_column(name: str) -> str:
    """Return a header name in the form used to compare headers.

    Comparison ignores case, a byte-order mark and surrounding or repeated spaces.
    """
    return " ".join(name.replace("\ufeff", "").split()).casefold()


# The date that ``timestamp_format_problem`` writes with a format and reads back. Its
# day, month and year differ from strptime's defaults (1900-01-01), so a format
# that leaves one of them out reads the date back wrong.
_FORMAT_CHECK_TIME = datetime(2024, 5, 17, 13, 45, 30, tzinfo=timezone.utc)
TIMESTAMP_FORMAT_FIX = (
    'write it with the directives of Python\'s datetime.strptime, such as "%d/%m/%Y" or '
    '"%Y-%m-%d %H:%M", or write "iso" for ISO 8601'
)


def timestamp_format_problem(layout: str) -> str | None:
    """Return why a ``timestamp_formats`` entry cannot read dates, with the fix, or None when it can.

    ``"iso"`` is always valid. Any other entry is a strptime format. It must
    parse, so it has no unknown directive such as ``%Q`` and no lone ``%``.
    A date written with it must read back with its year, month and day, so
    that no row's date silently becomes the 1st of a month or a day in 1900.
    """
    if layout == "iso":
        return None
    try:
        written = _FORMAT_CHECK_TIME.strftime(layout)
        parsed = datetime.strptime(written, layout)
    except ValueError as error:
        # strptime reports a format it cannot use, such as "'Q' is a bad directive in format '%Q'".
        return f"is not a date format strptime can read ({error}); {TIMESTAMP_FORMAT_FIX}"
    except re.error:
        # strptime compiles the format into a regular expression, which fails for a directive given twice.
        return f"is not a date format strptime can read (it repeats a directive); {TIMESTAMP_FORMAT_FIX}"
    if parsed.date() != _FORMAT_CHECK_TIME.date():
        return (
            f"does not read a whole date: {_FORMAT_CHECK_TIME.date()} written with it is {written!r}, "
            f"which reads back as {parsed.date()}; include the year, the month and the day "
            f"(such as %Y, %m and %d), or write \"iso\" for ISO 8601"
        )
    return None


def _columns_in(source: str) -> list[str]:
    """Return the column names a mapping value reads: one name, or a template's placeholders."""
    if "{" not in source:
        return [source]
    return [name for name in _PLACEHOLDER.findall(source) if not name.startswith("#")]


class Layout(BaseModel):
    """A column mapping from one CSV layout to ``Transaction`` fields.

    ``columns`` maps a field to a column name or a template. ``optional``
    does the same for columns used only when the header has them.
    ``preferred`` maps a field to column names read before its ``columns``
    or ``optional`` source, in order, when the header has them: a row takes
    the first of them that is not empty, and the field's own source when
    all are empty. They are not required, so they never change which
    headers a layout accepts.
    ``constants`` gives fixed values (a bank export has no user_id column).
    The amount comes from ``columns["amount_usd"]`` or from a pair of
    ``debit_column`` and ``credit_column``; ``purchases`` says whether a
    purchase is written as a positive or a negative amount.
    ``skip_when_present`` maps a column to the reason for skipping the rows
    in which it is not empty. ``skip_values`` maps a column to the values
    (compared without case) that mark a row as no purchase, each with the
    reason, such as "Payment" in a "Type" column. The value "" marks a row
    whose column is empty. ``optional_skip_values`` does the same for columns
    that the header may lack, and a header without such a column skips no
    row by it. ``optional_skip_prefixes`` has the same form, but its keys are
    value prefixes (compared without case), such as "TRANSFER_OUT_" for every
    detailed Plaid category under TRANSFER_OUT, and it is checked after
    ``optional_skip_values``. ``optional_reject_when_present`` maps a column
    the header may lack to the reason for rejecting the rows in which it is
    not empty, such as an amount in a currency that has no ISO 4217 code. Skip rules apply
    first, so a row they skip, or a refund, is skipped and not rejected.
    Times without a zone are read in ``timezone``.
    With ``exact_header``, ``detect_layout`` picks this layout only for a
    header that is ``expected_header`` exactly, in order; that keeps a short
    preset from claiming longer headers. ``header`` names the columns, in
    order, of a file that has no header row, so its first line is read as
    data (a first line that is this header is still taken as the header).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    columns: dict[str, str]
    optional: dict[str, str] = {}
    preferred: dict[str, tuple[str, ...]] = {}
    constants: dict[str, str] = {}
    debit_column: str | None = None
    credit_column: str | None = None
    purchases: Literal["positive", "negative"] = "positive"
    timestamp_formats: tuple[str, ...] = DEFAULT_TIMESTAMP_FORMATS
    timezone: str = "UTC"
    transforms: dict[str, Literal["us_state_or_country"]] = {}
    skip_when_present: dict[str, str] = {}
    skip_values: dict[str, dict[str, str]] = {}
    optional_skip_values: dict[str, dict[str, str]] = {}
    optional_skip_prefixes: dict[str, dict[str, str]] = {}
    optional_reject_when_present: dict[str, str] = {}
    expected_header: list[str] = []
    exact_header: bool = False
    header: list[str] = []

    @field_validator("preferred", mode="before")
    @classmethod
    def _one_column_as_list(cls, value: object) -> object:
        """Accept ``merchant: Payee`` in a layout file as ``merchant: [Payee]``."""
        if isinstance(value, dict):
            return {field: [names] if isinstance(names, str) else names for field, names in value.items()}
        return value

    @field_validator("timestamp_formats")
    @classmethod
    def _check_timestamp_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        """Reject a format that strptime cannot use or that does not read a whole date, naming the entry."""
        if not formats:
            raise ValueError('lists no formats; give at least one, such as ["%m/%d/%Y"] or ["iso"]')
        for position, layout in enumerate(formats, start=1):
            problem = timestamp_format_problem(layout)
            if problem is not None:
                raise ValueError(f"entry {position}, {layout!r}, {problem}")
        return formats

    @model_validator(mode="after")
    def _check_fields(self) -> Layout:
        for mapping in (self.columns, self.optional, self.preferred, self.constants, self.transforms):
            unknown = sorted(set(mapping) - set(FIELDS))
            if unknown:
                raise ValueError(f"unknown transaction fields {unknown}; the fields are {', '.join(FIELDS)}")

        for field, names in self.preferred.items():
            if not names:
                raise ValueError(f"preferred.{field} lists no columns; name at least one column, or remove {field}")
            for name in names:
                if not name.strip() or "{" in name:
                    raise ValueError(
                        f"preferred.{field}: {name!r} is not a column name; list plain column names, "
                        "because templates are not read here"
                    )

        self._check_optional_rules()

        provided = set(self.columns) | set(self.constants)
        missing = [name for name in REQUIRED_FIELDS if name not in provided]
        if missing:
            raise ValueError(f"no column or constant for {', '.join(missing)}")

        has_amount = "amount_usd" in self.columns
        has_pair = self.debit_column is not None and self.credit_column is not None
        if has_amount == has_pair:
            raise ValueError("give either columns.amount_usd or both debit_column and credit_column")
        if "amount_usd" in self.preferred and not has_amount:
            raise ValueError("preferred.amount_usd needs columns.amount_usd, because debit_column and "
                             "credit_column are read as a pair; remove preferred.amount_usd")

        self._check_placeholders()

        if self.exact_header and not self.expected_header:
            raise ValueError("exact_header needs expected_header, the header to match")

        self._check_header()

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA zone name such as UTC or America/New_York") from None
        return self

    def _check_placeholders(self) -> None:
        """Check that templates use only known ``#`` placeholders, and that user_id uses no row hash or count."""
        for option, mapping in (("columns", self.columns), ("optional", self.optional)):
            for field, source in mapping.items():
                unknown = [name for name in _PLACEHOLDER.findall(source)
                           if name.startswith("#") and name not in ROW_PLACEHOLDERS]
                if unknown:
                    known = ", ".join(f"{{{name}}}" for name in ROW_PLACEHOLDERS)
                    raise ValueError(f"{option}.{field}: {{{unknown[0]}}} is not a placeholder; "
                                     f"the placeholders that are not columns are {known}")
        # Both are computed from the row's user_id, so user_id cannot be made from them.
        for option, mapping in (("columns", self.columns), ("optional", self.optional)):
            for name in ("#row_hash", "#repeat"):
                if f"{{{name}}}" in mapping.get("user_id", ""):
                    raise ValueError(f"{option}.user_id cannot use {{{name}}}, because {{{name}}} is "
                                     "computed from the user_id")

    def _check_optional_rules(self) -> None:
        """Check that the optional skip and reject rules name plain columns, and each reject rule a reason."""
        for option, mapping in (("optional_skip_values", self.optional_skip_values),
                                ("optional_skip_prefixes", self.optional_skip_prefixes),
                                ("optional_reject_when_present", self.optional_reject_when_present)):
            for name in mapping:
                if not name.strip() or "{" in name:
                    raise ValueError(
                        f"{option}: {name!r} is not a column name; use plain column names, "
                        "because templates are not read here"
                    )
        for name, reasons in self.optional_skip_prefixes.items():
            if "" in reasons:
                raise ValueError(f"optional_skip_prefixes.{name}: the prefix '' would skip every row; "
                                 "give the text that values start with, or use optional_skip_values")
        for name, reason in self.optional_reject_when_present.items():
            if not reason.strip():
                raise ValueError(f"optional_reject_when_present.{name} gives no reason; write why such rows are rejected")

    def _check_header(self) -> None:
        """Check that ``header`` names each column once and names every column the layout reads."""
        if not self.header:
            return
        normalized = [normalize_column(name) for name in self.header]
        if "" in normalized:
            position = normalized.index("") + 1
            raise ValueError(f"header: column {position} has no name; name every column, such as unused{position}")
        repeated = sorted({name for name, norm in zip(self.header, normalized) if normalized.count(norm) > 1})
        if repeated:
            raise ValueError(f"header names {repeated} more than once; give every column its own name")
        unknown = [name for name in self.required_columns if normalize_column(name) not in normalized]
        if unknown:
            raise ValueError(
                f"the layout reads columns {unknown} that header does not name; "
                f"header names {self.header}"
            )

    @property
    def required_columns(self) -> list[str]:
        """Return the header columns this layout cannot work without, in mapping order."""
        names: list[str] = []
        for source in self.columns.values():
            names += _columns_in(source)
        names += [name for name in (self.debit_column, self.credit_column) if name]
        names += list(self.skip_when_present)
        names += list(self.skip_values)
        return list(dict.fromkeys(names))

    @property
    def read_columns(self) -> list[str]:
        """Return every header column this layout reads when the header has it: required, optional and preferred."""
        names = list(self.required_columns)
        for source in self.optional.values():
            names += _columns_in(source)
        for preferred in self.preferred.values():
            names += preferred
        names += [*self.optional_skip_values, *self.optional_skip_prefixes, *self.optional_reject_when_present]
        return list(dict.fromkeys(names))

    def with_user(self, user_id: str) -> Layout:
        """Return this layout with ``user_id`` as the constant user, for exports that name no user."""
        return self.model_copy(update={"constants": {**self.constants, "user_id": user_id}})

    def bind(self, header: list[str]) -> BoundLayout:
        """Resolve column positions against a header; raise ``InputError`` if columns are missing."""
        positions: dict[str, int] = {}
        repeats: dict[str, list[int]] = {}  # normalized name -> every position of a name found twice or more
        for index, name in enumerate(header):
            key = normalize_column(name)
            if key in positions:
                repeats.setdefault(key, [positions[key]]).append(index)
            else:
                positions[key] = index

        missing = [name for name in self.required_columns if normalize_column(name) not in positions]
        if missing:
            raise InputError(headerless_message(header) or missing_columns_message(self, header, missing))

        used_normalized = {normalize_column(name) for name in self.read_columns}
        for key, indexes in repeats.items():
            if key in used_normalized:
                raise InputError(repeated_column_message(self, header, indexes))
        # A repeated column that the layout does not read is ignored, like any other unused column.
        extra = [name for name in header if normalize_column(name) not in used_normalized]

        optional = {
            field: source
            for field, source in self.optional.items()
            if all(normalize_column(name) in positions for name in _columns_in(source))
        }
        preferred = {
            field: tuple(
                (name, positions[normalize_column(name)]) for name in names if normalize_column(name) in positions
            )
            for field, names in self.preferred.items()
        }
        optional_skips = tuple(
            (name, positions[normalize_column(name)], _casefolded(reasons))
            for name, reasons in self.optional_skip_values.items() if normalize_column(name) in positions
        )
        optional_prefix_skips = tuple(
            (name, positions[normalize_column(name)], _casefolded(reasons))
            for name, reasons in self.optional_skip_prefixes.items() if normalize_column(name) in positions
        )
        optional_rejects = tuple(
            (name, positions[normalize_column(name)], reason)
            for name, reason in self.optional_reject_when_present.items() if normalize_column(name) in positions
        )
        return BoundLayout(
            self, positions, len(header), optional, extra, ZoneInfo(self.timezone), header=list(header),
            preferred={field: columns for field, columns in preferred.items() if columns},
            optional_skips=optional_skips, optional_prefix_skips=optional_prefix_skips,
            optional_rejects=optional_rejects,
        )


# difflib ratio at or above which a header column counts as a misspelling of a
# missing column. It pairs 'Catagory' with 'Category' (0.875) and 'amount_usdd'
# with 'amount_usd' (0.95), but not 'amount' with 'Month' (0.73), 'Destination'
# with 'Description' (0.73) or 'Datetime' with 'Date' (0.67), which are other
# columns rather than misspellings.
MISSPELLING_RATIO = 0.85


def misspelled_columns(layout: Layout, header: list[str], missing: list[str]) -> dict[str, str]:
    """Map each missing column to the header column that is likely a misspelling of it.

    Names are compared in ``normalize_column`` form. A header column is a
    candidate only when it is not a column of the layout (read by it or in its
    expected header), so 'Description' is never offered for 'Original
    Description'. Each header column is offered for one missing column at most.
    """
    known = {
        normalize_column(name)
        for name in (*layout.required_columns, *layout.expected_header, *layout.header)
    }
    for source in layout.optional.values():
        known.update(normalize_column(name) for name in _columns_in(source))
    for names in layout.preferred.values():
        known.update(normalize_column(name) for name in names)
    for name in (*layout.optional_skip_values, *layout.optional_skip_prefixes, *layout.optional_reject_when_present):
        known.add(normalize_column(name))
    candidates = {normalize_column(name): name for name in header if normalize_column(name) not in known}

    pairs: dict[str, str] = {}
    for name in missing:
        close = difflib.get_close_matches(normalize_column(name), list(candidates), n=1, cutoff=MISSPELLING_RATIO)
        if close:
            pairs[name] = candidates.pop(close[0])
    return pairs


def repeated_column_message(layout: Layout, header: list[str], indexes: list[int]) -> str:
    """Build the error for a column that the layout reads and the header names at several 0-based ``indexes``."""
    names = list(dict.fromkeys(header[index] for index in indexes))
    positions = [str(index + 1) for index in indexes]
    where = f"{', '.join(positions[:-1])} and {positions[-1]}"
    times = "twice" if len(indexes) == 2 else f"{len(indexes)} times"
    spellings = ""
    if len(names) > 1:
        spellings = (f"Header names are compared without case and extra spaces, so "
                     f"{' and '.join(repr(name) for name in names)} are the same column. ")
    fix = "one of the two columns" if len(indexes) == 2 else "all of them but one"
    return (
        f"the header names the column {names[0]!r} {times}, at positions {where} (counting from 1), "
        f"and the {layout.name} layout reads that column, so it cannot tell which of the values to use. "
        f"{spellings}Rename or remove {fix}, so the header names each column once"
    )


def missing_columns_message(layout: Layout, header: list[str], missing: list[str]) -> str:
    """Build the error for a header that lacks columns: what is missing, likely misspellings, the expected header."""
    hints = [
        f"{found!r} may be a misspelling of {name!r}"
        for name, found in misspelled_columns(layout, header, missing).items()
    ]
    text = (
        f"the header is missing the column(s) {', '.join(repr(name) for name in missing)} "
        f"of the {layout.name} layout"
    )
    if hints:
        text += f" ({'; '.join(hints)})"
    text += f"; the expected header is: {','.join(layout.expected_header or layout.required_columns)}"
    return text


@dataclass
class Skip:
    """A row that is valid but not a purchase, so it is recorded and not published."""

    reason: str
    transaction_id: str | None = None


@dataclass
class BoundLayout:
    """A layout whose columns are resolved to positions in one file's header."""

    layout: Layout
    positions: dict[str, int]
    width: int
    optional: dict[str, str]
    extra_columns: list[str]
    zone: tzinfo
    _indexes: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)  # column name -> position, filled on use
    _field_sources: list[tuple[str, int | None, str]] | None = dataclasses.field(default=None, repr=False)
    # (line, amount) when the amount of the last row converted was finer than a
    # cent. A row that raises RowError leaves it unchanged.
    row_sub_cent: tuple[int, Decimal] | None = None
    header: list[str] = dataclasses.field(default_factory=list)  # the column names as the file writes them
    # Field -> (column name, position) of the layout's preferred columns that the header has, in order.
    preferred: dict[str, tuple[tuple[str, int], ...]] = dataclasses.field(default_factory=dict)
    # Field -> the preferred column that gave the last converted row its value, for error messages.
    _row_columns: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    # (column name, position, casefolded value -> reason) of the layout's optional_skip_values that the header has.
    optional_skips: tuple[tuple[str, int, dict[str, str]], ...] = ()
    # (column name, position, casefolded prefix -> reason) of the layout's optional_skip_prefixes that the header has.
    optional_prefix_skips: tuple[tuple[str, int, dict[str, str]], ...] = ()
    # (column name, position, reason) of the layout's optional_reject_when_present that the header has.
    optional_rejects: tuple[tuple[str, int, str], ...] = ()
    # Row digest -> how many rows with that digest were read so far, filled only for a {#repeat} template.
    # NOTE: one entry per distinct row, about 100 bytes each (CPython 3.11, tracemalloc over
    # 100,000 digests), so a file of a million distinct rows uses about 100 MB here while it is read.
    _repeats: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    # (line, digest) and (line, repeat count) of the last row rendered, so each row is hashed and counted once.
    _row_hash: tuple[int, str] | None = dataclasses.field(default=None, repr=False)
    _row_repeat: tuple[int, int] | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Layout is a pydantic model, and reading its attributes takes about
        # five times as long as reading a plain object's (pydantic 2.14,
        # CPython 3.11). The settings that every row reads are copied here
        # once. Layout is frozen, so the copies cannot go stale.
        layout = self.layout
        self._constants = layout.constants
        self._has_skip_rules = bool(layout.skip_when_present or layout.skip_values or self.optional_skips
                                    or self.optional_prefix_skips)
        self._timestamp_formats = layout.timestamp_formats
        self._transforms = layout.transforms
        self._amount_in_column = "amount_usd" in layout.columns
        self._purchases_negative = layout.purchases == "negative"
        self._user_source = layout.columns.get("user_id")

    def _sources(self) -> list[tuple[str, int | None, str]]:
        """Return (field, column position or None for a template, source) for every mapped field."""
        if self._field_sources is None:
            self._field_sources = [
                (field, None if "{" in source else self.positions[normalize_column(source)], source)
                for field, source in (*self.layout.columns.items(), *self.optional.items())
            ]
        return self._field_sources

    def _value(self, fields: list[str], column: str) -> str:
        index = self._indexes.get(column)
        if index is None:
            index = self._indexes[column] = self.positions[normalize_column(column)]
        return fields[index]

    def _render(self, source: str, fields: list[str], line: int, raw: str) -> str:
        """Return the text a mapping value gives for one row."""
        if "{" not in source:
            return self._value(fields, source).strip()

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name == "#line":
                return str(line)
            if name == "#row_hash":
                return self._digest(fields, line, raw)
            if name == "#repeat":
                return str(self._repeat(fields, line, raw))
            return self._value(fields, name).strip()

        return " ".join(_PLACEHOLDER.sub(substitute, source).split())

    def _digest(self, fields: list[str], line: int, raw: str) -> str:
        """Return ``row_digest`` of a row's user_id and raw text, computed once per row."""
        if self._row_hash is None or self._row_hash[0] != line:
            self._row_hash = (line, row_digest(self._row_user(fields, line, raw), raw))
        return self._row_hash[1]

    def _repeat(self, fields: list[str], line: int, raw: str) -> int:
        """Return how many earlier rows of this file had the same digest as this row, and count this row.

        Rows are counted in the order they are rendered, which is file
        order. A row is counted once however many templates use {#repeat}.
        """
        if self._row_repeat is None or self._row_repeat[0] != line:
            digest = self._digest(fields, line, raw)
            count = self._repeats.get(digest, 0)
            self._repeats[digest] = count + 1
            self._row_repeat = (line, count)
        return self._row_repeat[1]

    def _row_user(self, fields: list[str], line: int, raw: str) -> str:
        """Return the user_id of one row as ``convert`` sets it: a preferred column, the mapped one, else the constant."""
        preferred = self._preferred_text(fields, "user_id")
        if preferred is not None:
            return preferred[1]
        if self._user_source is not None:
            return self._render(self._user_source, fields, line, raw)
        return self._constants.get("user_id", "")

    def _preferred_text(self, fields: list[str], field: str) -> tuple[str, str] | None:
        """Return (column, text) of the first preferred column of ``field`` that is not empty in a row, or None."""
        for column, index in self.preferred.get(field, ()):
            text = fields[index].strip()
            if text:
                return column, text
        return None

    def timestamp_text(self, fields: list[str], line: int, raw: str) -> str | None:
        """Return the text ``convert`` reads the timestamp from, or None for a constant timestamp or a row of the wrong width."""
        if len(fields) != self.width:
            return None
        preferred = self._preferred_text(fields, "timestamp")
        if preferred is not None:
            return preferred[1]
        source = self.layout.columns.get("timestamp")
        if source is None:
            return None
        return self._render(source, fields, line, raw)

    def _source_name(self, field: str) -> str:
        """Return how error messages name the column behind a field."""
        column = self._row_columns.get(field)
        if column is not None:
            return column
        if field == "amount_usd" and "amount_usd" not in self.layout.columns:
            return f"{self.layout.debit_column}/{self.layout.credit_column}"
        source = self.layout.columns.get(field) or self.optional.get(field) or field
        names = _columns_in(source)
        return names[0] if len(names) == 1 else "/".join(names) or field

    def convert(self, fields: list[str], line: int, raw: str) -> tuple[Transaction | Skip, bool]:
        """Turn one row into a ``Transaction`` or a ``Skip``.

        Returns the result and whether its timestamp carried a zone. Raises
        ``RowError`` naming the column, the value and the fix.
        """
        if len(fields) != self.width:
            raise self._width_error(fields, line, raw)

        values: dict[str, str] = dict(self._constants)
        for field, index, source in self._field_sources or self._sources():
            values[field] = fields[index].strip() if index is not None else self._render(source, fields, line, raw)
        if self.preferred:
            self._take_preferred(fields, values)
        transaction_id = values.get("transaction_id") or None
        try:
            return self._convert_values(fields, values, transaction_id, line)
        except RowError as error:
            error.transaction_id = transaction_id
            raise

    def _take_preferred(self, fields: list[str], values: dict[str, str]) -> None:
        """Set each field that has preferred columns from the first of them that is not empty in this row."""
        self._row_columns = {}
        for field in self.preferred:
            preferred = self._preferred_text(fields, field)
            if preferred is not None:
                self._row_columns[field], values[field] = preferred

    def _width_error(self, fields: list[str], line: int, raw: str) -> RowError:
        """Build the error for a row whose field count differs from the header's."""
        separated = other_separator(raw, len(fields)) if len(fields) < self.width else None
        if separated is not None and len(separated[1]) == self.width:
            name = OTHER_SEPARATORS[separated[0]]
            count = "1 field" if len(fields) == 1 else f"{len(fields)} fields"
            return RowError(
                f"the row has {count} but the header has {self.width}, and split at the {name} "
                f"it has {self.width}, so the file looks separated by {name}, not commas",
                line=line, value=raw[:200], fix=SEPARATOR_FIX,
            )
        if len(fields) > self.width:
            spaced = space_before_quote_error(raw, len(fields), self.width, line)
            if spaced is not None:
                return spaced
        if self.layout.header:
            # The file has no header row, so the layout's own header may be what is wrong.
            return RowError(
                f"the row has {len(fields)} fields but the layout's header names {self.width} columns",
                line=line, value=raw[:200],
                fix=f"name every column of the file in the layout's header, in order; if only some rows "
                    f"differ, quote any field that contains a comma, like \"Joe's, Inc\"",
            )
        if len(fields) > self.width:
            return RowError(
                f"the row has {len(fields)} fields but the header has {self.width}",
                line=line, value=raw[:200],
                fix="quote any field that contains a comma, like \"Joe's, Inc\"",
            )
        unfilled = self.header[len(fields):]
        names = ", ".join(repr(name) for name in unfilled) or f"{self.width - len(fields)} column(s)"
        return RowError(
            f"the row has {len(fields)} fields but the header has {self.width}, "
            f"so a field is missing and the column(s) {names} got no value",
            line=line, value=raw[:200],
            fix=f"add the missing field, and keep the comma of an empty field, so the row has {self.width} fields",
        )

    def _convert_values(
        self, fields: list[str], values: dict[str, str], transaction_id: str | None, line: int,
    ) -> tuple[Transaction | Skip, bool]:
        """Turn the mapped text of one row into a ``Transaction`` or a ``Skip``."""
        if self._has_skip_rules:
            skip = self._skip(fields, transaction_id)
            if skip is not None:
                return skip, True

        amount = self._amount(fields, values, line)
        if amount <= 0:
            self.row_sub_cent = (line, amount) if amount != to_cents(amount) else None
            kind = "zero amount" if amount == 0 else f"refund or credit of {format_amount(-amount)}"
            return Skip(f"{kind}, not a purchase; recorded, not recommended", transaction_id), True
        if self.optional_rejects:
            self._check_rejects(fields, line)

        text = values.get("timestamp", "")
        try:
            timestamp, had_zone = parse_timestamp(text, formats=self._timestamp_formats, zone=self.zone)
        except ValueError as error:
            column = self._source_name("timestamp")
            raise RowError.from_value_error(error, line=line, column=column, value=text) from None

        if self._transforms:
            for field, transform in self._transforms.items():
                if transform == "us_state_or_country":
                    values[field] = us_state_or_country(values.get(field, ""))

        # An empty value means the field was not given, except for category.
        # The check runs before the amount is added, because comparing a
        # Decimal with "" costs ten times as much as comparing two strings.
        if "" in values.values():
            values = {field: value for field, value in values.items() if value != "" or field == "category"}
        values["amount_usd"] = amount
        values["timestamp"] = timestamp
        transaction = canonical_transaction(values)
        if transaction is None:  # not in canonical form: validate in full, with error messages
            transaction = validate_transaction(values, line, self._source_name)
        # Validation rounds the amount to whole cents, so a different amount
        # means the row had more than two decimal places.
        self.row_sub_cent = (line, amount) if amount != transaction.amount_usd else None
        return transaction, had_zone

    def _skip(self, fields: list[str], transaction_id: str | None) -> Skip | None:
        """Return a ``Skip`` when a column marks the row as no purchase, else None."""
        for column, reason in self.layout.skip_when_present.items():
            flag = self._value(fields, column).strip()
            if flag:
                return Skip(f"{reason} ({column}: {flag}), not a purchase", transaction_id)

        for column, reasons in self.layout.skip_values.items():
            flag = self._value(fields, column).strip()
            reason = _casefolded(reasons).get(flag.casefold())
            if reason is not None:
                found = f"{column}: {flag}" if flag else f"{column} empty"
                return Skip(f"{reason} ({found}), not a purchase", transaction_id)

        for column, index, reasons in self.optional_skips:
            flag = fields[index].strip()
            reason = reasons.get(flag.casefold())
            if reason is not None:
                found = f"{column}: {flag}" if flag else f"{column} empty"
                return Skip(f"{reason} ({found}), not a purchase", transaction_id)

        for column, index, reasons in self.optional_prefix_skips:
            flag = fields[index].strip()
            folded = flag.casefold()
            for prefix, reason in reasons.items():
                if folded.startswith(prefix):
                    return Skip(f"{reason} ({column}: {flag}), not a purchase", transaction_id)
        return None

    def _check_rejects(self, fields: list[str], line: int) -> None:
        """Raise ``RowError`` when a column of ``optional_reject_when_present`` is not empty in this row."""
        for column, index, reason in self.optional_rejects:
            flag = fields[index].strip()
            if flag:
                raise RowError(f"{reason} ({column}: {flag})", line=line, column=column, value=flag,
                               fix="leave this row out of the file")

    def _amount(self, fields: list[str], values: dict, line: int) -> Decimal:
        """Return the signed amount with purchases positive."""
        if self._amount_in_column:
            text = values["amount_usd"]
            try:
                amount = parse_amount(text)
            except ValueError as error:
                column = self._source_name("amount_usd")
                raise RowError.from_value_error(error, line=line, column=column, value=text) from None
        else:
            amount = self._debit_credit(fields, line)

        if self._purchases_negative:
            amount = -amount
        return amount

    def _debit_credit(self, fields: list[str], line: int) -> Decimal:
        """Return debit minus credit for layouts with two amount columns.

        A purchase is a positive debit. The credit column counts as a credit
        whatever its sign, because some issuers (Citi) write credits negative
        and others (Capital One) positive.
        """
        total = Decimal(0)
        for column, is_credit in ((self.layout.debit_column, False), (self.layout.credit_column, True)):
            text = self._value(fields, column).strip()
            if not text:
                continue
            try:
                amount = parse_amount(text)
            except ValueError as error:
                raise RowError.from_value_error(error, line=line, column=column, value=text) from None
            total += -abs(amount) if is_credit else amount
        if total == 0 and not any(self._value(fields, c).strip() for c in (self.layout.debit_column, self.layout.credit_column)):
            raise RowError(
                "both amount columns are empty", line=line,
                column=f"{self.layout.debit_column}/{self.layout.credit_column}", value="",
                fix="put the amount in one of them",
            )
        return total


def _casefolded(reasons: dict[str, str]) -> dict[str, str]:
    return {value.casefold(): reason for value, reason in reasons.items()}


def us_state_or_country(text: str) -> str:
    """Map a "Merchant State" value to a country: a US state code is US, a country name its code.

    An empty value (TabFormer online purchases) and a country name missing
    from the table give an empty string, which leaves merchant_country unset.
    """
    value = text.strip()
    if not value:
        return ""
    if value.upper() in US_STATE_CODES:
        return "US"
    return COUNTRY_CODES.get(value.casefold(), "")


# Examples of text fields for the fix of a JSON value of the wrong type.
_EXAMPLES = {"transaction_id": "tx-1001", "user_id": "user-1001", "merchant": "Whole Foods Market",
             "category": "groceries", "currency": "USD", "merchant_country": "US", "card_used": "amex-gold"}


def json_kind(value: object) -> str:
    """Return the JSON name of a decoded JSON value's type: null, boolean, number, string, array or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def validate_transaction(
    values: dict, line: int, source_name, missing_error: Callable[[str], RowError] | None = None,
) -> Transaction:
    """Build a ``Transaction``; turn a pydantic error into a ``RowError`` naming the column.

    A required field absent from ``values`` is reported as empty, because a
    CSV reader leaves out the fields of empty cells. A reader whose input can
    lack a field, such as a JSON object without the key, passes
    ``missing_error`` to build that error from the field's name.
    """
    for field in CODE_FIELDS:
        code = values.get(field)
        if isinstance(code, str):
            try:
                check_code(field, code)
            except InvalidValueError as error:
                raise RowError(error.reason, line=line, column=source_name(field), value=code,
                               fix=error.fix) from None
    try:
        # The same validation as Transaction.model_validate(values), without
        # that method's argument handling, which adds about 15% to each call
        # (pydantic 2.14).
        return Transaction.__pydantic_validator__.validate_python(values)
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "row"
        value = first.get("input")
        column = source_name(field)
        if first["type"] == "string_too_long":
            limit = first["ctx"]["max_length"]
            text = str(value)
            quoted = repr(text) if len(text) <= 20 else f"{text[:20]!r}..."
            raise RowError(
                f"{field} {quoted} is {len(text)} characters long, above the limit of {limit}",
                line=line, column=column, value=text if len(text) <= 80 else text[:80] + "...",
                fix=f"shorten it to {limit} characters",
            ) from None
        if first["type"] == "missing" and missing_error is not None:
            raise missing_error(field) from None
        if first["type"] == "missing" or (first["type"] == "string_too_short" and not str(value).strip()):
            # The input of a "missing" error is the whole row, not the field's value.
            raise RowError(f"{field} is empty", line=line, column=column, value="", fix=EMPTY_VALUE_FIX) from None
        if first["type"] == "string_too_short":
            limit = first["ctx"]["min_length"]
            raise RowError(
                f"{field} {value!r} is {len(str(value).strip())} characters long, below the minimum of {limit}",
                line=line, column=column, value=value, fix=f"write at least {limit} characters",
            ) from None
        if first["type"] == "string_type":
            # Only JSON input has values that are not text, so they are named as JSON names them.
            kind = json_kind(value)
            json_text = "" if value is None else f" ({json.dumps(value, default=str)[:40]})"
            raise RowError(f"{field} is a JSON {kind}{json_text}, not a string", line=line, column=column,
                           value=value, fix=f'write it as text, like "{_EXAMPLES.get(field, "text")}"') from None
        # The model's validators write "reason; fix", as in "mcc '55410' is not
        # a 4-digit ... code; write it like 5411, or leave it empty".
        reason, _, fix = first["msg"].removeprefix("Value error, ").partition("; ")
        if repr(value) not in reason and str(value) not in reason:
            reason = f"{field} {value!r} is invalid: {reason}"
        raise RowError(reason, line=line, column=column, value=value, fix=fix) from None


DOCUMENTED = Layout(
    name="documented",
    columns={
        field: field
        for field in ("transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp")
    },
    optional={"currency": "currency", "merchant_country": "merchant_country", "card_used": "card_used"},
    expected_header="transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp".split(","),
)

# IBM TabFormer synthetic card transactions (github.com/IBM/TabFormer, Apache-2.0).
# Its "Merchant Name" is a hashed integer, "Merchant State" is empty for online
# purchases and holds a country name abroad, and "Errors?" names why an
# authorization was declined; declined rows are skipped because no purchase
# happened. The transaction_id joins user, card and line, so it stays the same
# each time one file is read and publishing it twice is caught as a duplicate.
# NOTE: the line is the line in the file read; the same row in a file cut
# differently (one user versus all users) gets a different transaction_id.
TABFORMER = Layout(
    name="tabformer",
    columns={
        "transaction_id": "tabformer-{User}-{Card}-{#line}",
        "user_id": "tabformer-{User}",
        "merchant": "merchant {Merchant Name}, {Merchant City} {Merchant State}",
        "amount_usd": "Amount",
        "mcc": "MCC",
        "timestamp": "{Year}-{Month}-{Day} {Time}",
        "merchant_country": "Merchant State",
        "card_used": "tabformer-{User}-card-{Card}",
    },
    timestamp_formats=("%Y-%m-%d %H:%M",),
    transforms={"merchant_country": "us_state_or_country"},
    skip_when_present={"Errors?": "declined authorization"},
    expected_header=(
        "User,Card,Year,Month,Day,Time,Amount,Use Chip,Merchant Name,Merchant City,"
        "Merchant State,Zip,MCC,Errors?,Is Fraud?"
    ).split(","),
)

# The bank presets build on ``Layout``, so they are imported once it exists.
from producer.bank_layouts import BANK_LAYOUTS  # noqa: E402

PRESETS = (TABFORMER, DOCUMENTED, *BANK_LAYOUTS)


def detect_layout(header: list[str]) -> Layout:
    """Return the preset whose required columns are all in ``header``.

    When several presets match, the one that requires the most columns wins,
    so a Chase header (which also holds every column of the generic card
    layout) is read as Chase. Raises ``InputError`` when none matches. For
    a first line that looks like data, the error states that the file seems to
    have no header row. Otherwise, when a preset is near (``nearest_preset``),
    the error leads with the columns that preset misses and its expected
    header. When no preset is near, it states that, and leads with the
    documented header. It ends with the ``--layout`` advice and the preset names.
    """
    present = {normalize_column(name) for name in header}
    normalized_header = [normalize_column(name) for name in header]
    matches = [
        layout for layout in PRESETS
        if all(normalize_column(name) in present for name in layout.required_columns)
        and (not layout.exact_header
             or normalized_header == [normalize_column(name) for name in layout.expected_header])
    ]
    if matches:
        return max(matches, key=lambda layout: len(layout.required_columns))
    headerless = headerless_message(header)
    if headerless is not None:
        raise InputError(headerless)

    # An exact-header preset whose columns are all present but in another
    # order or with extras has nothing missing, so it cannot be the nearest.
    incomplete = [
        layout for layout in PRESETS
        if any(normalize_column(name) not in present for name in layout.required_columns)
    ]
    nearest = nearest_preset(incomplete, header)
    header_text = shorten_header(",".join(header))
    if nearest is not None:
        missing = [name for name in nearest.required_columns if normalize_column(name) not in present]
        lead = (
            f"{missing_columns_message(nearest, header, missing)}. "
            f"The header {header_text!r} matches no known layout. "
        )
    else:
        shared = any(normalize_column(name) in present for layout in PRESETS for name in layout.required_columns)
        reason = (
            "it contains no more than half of the required columns of any preset" if shared
            else "no preset uses any of its columns"
        )
        lead = (
            f"the header {header_text!r} matches no known layout, and {reason}. "
            f"For rows in the documented layout, write the header {','.join(DOCUMENTED.expected_header)}. "
        )
    exact = "".join(
        f"The {layout.name} layout needs exactly the header {','.join(layout.expected_header)}, "
        "in that order and with no other columns. "
        for layout in PRESETS if layout not in incomplete
    )
    raise InputError(
        f"{lead}{exact}To read the file as one of the presets, pass its name with --layout, such as --layout chase. "
        f"For another layout, describe its columns in a file and pass it with --layout "
        f"(see \"A layout of your own\" in docs/input-formats.md). "
        f"Presets, with their headers in docs/input-formats.md: {', '.join(layout.name for layout in PRESETS)}"
    )


def nearest_preset(layouts: list[Layout], header: list[str]) -> Layout | None:
    """Return the layout that ``header`` most likely is with a few columns renamed or missing, or None.

    A required column counts as found when the header has it, or has a
    misspelling of it (``misspelled_columns``). A layout is near when more
    than half of its required columns are found, so 6 of the 7 documented
    columns are near and 3 of the 6 schwab-checking columns are not. Of the
    near layouts, the one with the largest share found wins, then the one
    with the most columns found, then the first in ``layouts``.
    """
    present = {normalize_column(name) for name in header}
    best: tuple[float, int] | None = None
    nearest = None
    for layout in layouts:
        required = layout.required_columns
        missing = [name for name in required if normalize_column(name) not in present]
        found = len(required) - len(missing) + len(misspelled_columns(layout, header, missing))
        if 2 * found <= len(required):
            continue
        score = (found / len(required), found)
        if best is None or score > best:
            best, nearest = score, layout
    return nearest


def headerless_message(header: list[str]) -> str | None:
    """Build the error for a first line that looks like data, or return None when it looks like a header.

    The line counts as data when at least two of its fields read as dates
    (in any preset's date format) or amounts, which no preset's header does.
    """
    formats = tuple(dict.fromkeys(fmt for layout in PRESETS for fmt in layout.timestamp_formats))
    data_fields = []
    for field in header:
        text = field.strip()
        if not text:
            continue
        try:
            parse_amount(text)
        except ValueError:
            try:
                parse_timestamp(text, formats=formats, zone=timezone.utc)
            except ValueError:
                continue
        data_fields.append(text)
    if len(data_fields) < 2:
        return None

    return (
        f"the first line {shorten_header(','.join(header))!r} looks like data, not a header, because "
        f"{', '.join(repr(text) for text in data_fields[:5])} read as dates or amounts, "
        "so the file seems to have no header row. Add a header line at the top of the file that names "
        f"the columns: the documented header {','.join(DOCUMENTED.expected_header)}, "
        "or the header of a bank preset from docs/input-formats.md. For other column names, also pass "
        "a layout file with --layout that maps them to transaction fields "
        "(see \"A layout of your own\" in docs/input-formats.md). To read the file as it is, "
        "list its columns in order under header: in that layout file."
    )


# The maximum number of characters of a header line that an error message shows.
HEADER_SHOWN_CHARS = 300


def shorten_header(text: str, separator: str = ",", limit: int = HEADER_SHOWN_CHARS) -> str:
    """Return a header line for a message, cut after the last whole column within ``limit`` characters.

    A cut header ends with the separator and "...", so no column name is cut
    in the middle, unless the first column alone is longer than ``limit``.
    """
    if len(text) <= limit:
        return text
    cut = text.rfind(separator, 0, limit)
    if cut < 0:
        return text[:limit] + "..."
    return text[:cut + 1] + "..."


# Field separators that programs write in place of the comma. The semicolon
# is common in spreadsheets where the decimal separator is a comma, the tab in
# "tab delimited" exports, and the pipe in database and data-generator output
# (the Sparkov transaction generator writes pipe-delimited files).
OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "pipes"}


def other_separator(line: str, comma_fields: int) -> tuple[str, list[str]] | None:
    """Return the separator a line is more likely split by than by commas, and its fields.

    ``comma_fields`` is the number of fields the line has when split at
    commas. A separator counts when it splits the line, read as CSV with
    quotes, into more fields than that, and into at least two. When both
    count, the one with more fields wins.
    """
    best: tuple[str, list[str]] | None = None
    for separator in OTHER_SEPARATORS:
        if separator not in line:
            continue
        try:
            fields = next(csv.reader([line], delimiter=separator))
        except csv.Error:
            continue
        if len(fields) >= 2 and len(fields) > comma_fields and (best is None or len(fields) > len(best[1])):
            best = (separator, fields)
    return best


SEPARATOR_FIX = (
    "RewardPilot reads comma-separated files only. Export the file again as CSV with a comma as the "
    "field separator, or open it in a spreadsheet program and save it as CSV with ',' as the field delimiter"
)
DECIMAL_COMMA_FIX = (
    "If amounts are written with a decimal comma (12,50), change them to a decimal point (12.50) as well, "
    "because a comma in an amount is read as a thousands separator, so 1,500 would be read as 1500.00"
)


# A comma followed by spaces or tabs and a quote: the quote then does not open a quoted field.
_SPACE_BEFORE_QUOTE = re.compile(r',[ \t]+"')


def space_before_quote_error(raw: str, field_count: int, width: int, line: int) -> RowError | None:
    """Build the error for a row split into too many fields by a space between a comma and a quote, or return None.

    CSV reads a quote as the start of a quoted field only when it is the
    first character of the field, so in ``u1, "Joe's, Diner"`` the comma
    inside the quotes splits the field. The row counts as such when it has
    a comma, spaces and a quote, and read with the spaces after each comma
    skipped (csv's ``skipinitialspace``) it has ``width`` fields.
    ``field_count`` is how many fields the row has as read.
    """
    if _SPACE_BEFORE_QUOTE.search(raw) is None:
        return None
    try:
        fields = next(csv.reader([raw], skipinitialspace=True))
    except (csv.Error, StopIteration):
        return None
    if len(fields) != width:
        return None
    quoted = next((field for field in fields if "," in field), None)
    inside = f'the comma inside "{quoted}"' if quoted is not None else "a comma inside the quotes"
    example = f', as in ,"{quoted}"' if quoted is not None else ""
    return RowError(
        f"the row has {field_count} fields but the header has {width}. A space comes between a comma and the "
        f"quote after it, so that quote does not start a quoted field, and {inside} splits the field",
        line=line, value=raw[:200],
        fix=f"remove the space between each comma and the quote after it{example}. "
            "RewardPilot has no option that skips spaces after commas",
    )


def other_separator_message(line: str, comma_fields: int, layout: Layout | None = None) -> str | None:
    """Build the error for a header separated by semicolons, tabs or pipes, or return None when it is not.

    The message names the layout whose columns the header has once split at
    that separator (``layout`` when given, else a preset), and how to write
    the file with commas. Files separated by semicolons often write amounts
    with a decimal comma, so for them it also adds how amounts must be written.
    When the split line reads as data (``headerless_message``), the message
    calls it the first line and adds that the file needs a header row.
    """
    found = other_separator(line, comma_fields)
    if found is None:
        return None
    separator, fields = found
    name = OTHER_SEPARATORS[separator]
    header = [field.strip() for field in fields]
    present = {normalize_column(column) for column in header}
    if layout is None:
        try:
            layout = detect_layout(header)
        except InputError:
            pass
    matched = ""
    if layout is not None and all(normalize_column(column) in present for column in layout.required_columns):
        matched = f", and these are the columns of the {layout.name} layout"

    is_data = headerless_message(header) is not None
    text = (
        f"{'the first line' if is_data else 'the header'} {shorten_header(line, separator)!r} looks separated "
        f"by {name}, not commas, because split at the {name} it has {len(fields)} columns{matched}. {SEPARATOR_FIX}"
    )
    if separator == ";":
        text += f". {DECIMAL_COMMA_FIX}"
    if is_data:
        text += (
            ". That line also reads as data, not a header, so the file seems to have no header row: "
            "add one, or list the columns in order under header: in a layout file passed with --layout"
        )
    return text


def preset_by_name(name: str) -> Layout | None:
    """Return the preset called ``name``, compared without case, or None when no preset has that name."""
    key = name.strip().casefold()
    for layout in PRESETS:
        if layout.name.casefold() == key:
            return layout
    return None


def _layout_not_found(path: Path) -> InputError:
    """Build the error for a ``--layout`` value that is neither a file nor a preset name."""
    names = [layout.name for layout in PRESETS]
    close = difflib.get_close_matches(str(path).strip().casefold(), names, n=1)
    hint = f" Did you mean the preset {close[0]!r}?" if close else ""
    return InputError(
        f"layout {str(path)!r} is not found: no file has that path and no preset has that name.{hint} "
        f"Give the path of a layout file (see \"A layout of your own\" in docs/input-formats.md), "
        f"or the name of a preset: {', '.join(names)}"
    )


def load_layout(path: str | Path) -> Layout:
    """Return the layout that a ``--layout`` value names: a YAML or JSON layout file, or a preset name.

    A file at that path wins over a preset of the same name. Raises
    ``InputError`` when the value is neither, listing the preset names, and
    when the file cannot be read or describes an invalid layout.
    """
    path = Path(path)
    try:
        exists = path.exists()
    except OSError:  # such as a name longer than the file system allows
        exists = False
    if not exists:
        preset = preset_by_name(str(path))
        if preset is not None:
            return preset
        raise _layout_not_found(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read layout file {str(path)!r}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(f"layout file {str(path)!r} is not valid YAML or JSON: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"layout file {str(path)!r} must hold a mapping with name and columns keys")
    data.setdefault("name", path.stem)
    try:
        return Layout.model_validate(data)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'layout'}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors(include_url=False)
        )
        raise InputError(f"layout file {str(path)!r} is invalid: {problems}") from None


def describe_layouts() -> str:
    """Return the presets and their expected headers, one per line, for help text."""
    return "\n".join(f"{layout.name}: {','.join(layout.expected_header or layout.required_columns)}" for layout in PRESETS)


__all__ = [
    "DOCUMENTED", "TABFORMER", "PRESETS", "Layout", "BoundLayout", "Skip",
    "detect_layout", "load_layout", "normalize_column", "preset_by_name", "row_digest",
]

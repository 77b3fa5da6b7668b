"""The README and docs/input-formats.md state the rules that the code enforces.

Each test reads the rule from the code (a pattern, a preset's date formats, the
producer's chunk size) and checks that the doc states it, so a doc that drops
part of a rule fails here.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from conftest import ROOT, one_server
from producer import BacklogTimeout, Producer
from producer.bank_layouts import BANK_LAYOUTS
from producer.publisher import DEFAULT_CHUNK_SIZE, backlog
from producer.values import US_DATE_FORMATS
from rewardpilot.models import Transaction
from rewardpilot.streams import JOB_ID_PATTERN, InvalidJobIdError, check_job_id

README = ROOT / "README.md"
INPUT_FORMATS = ROOT / "docs" / "input-formats.md"

# How the docs write each strptime directive that the presets use.
NOTATION = {"%m": "MM", "%d": "DD", "%Y": "YYYY", "%y": "YY", "%H": "HH", "%M": "MM", "%S": "SS"}


def prose(path) -> str:
    """Return a Markdown file's text with line breaks and runs of spaces made single spaces."""
    return re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))


def paragraph_with(path, phrase: str) -> str:
    """Return the paragraph of ``path`` that contains ``phrase``, with single spaces."""
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        text = re.sub(r"\s+", " ", block)
        if phrase in text:
            return text
    raise AssertionError(f"no paragraph of {path.name} contains {phrase!r}")


def purchase(number: int) -> Transaction:
    return Transaction(transaction_id=f"doc-{number}", user_id="u1", merchant="Shell", category="gas",
                       amount_usd=Decimal("3.00"), mcc="5541", timestamp="2026-11-02T10:00:00Z")


# The job id rule

def test_readme_job_id_rule_matches_check():
    rule = paragraph_with(README, "A job id (`--job ID`")

    assert "1 to 128 ASCII letters, digits, `.`, `_` or `-`, starting with a letter or digit" in rule
    assert JOB_ID_PATTERN.pattern == "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


@pytest.mark.parametrize("job", ["-run", ".run", "_run"])
def test_job_id_leading_symbol_rejected(job):
    with pytest.raises(InvalidJobIdError, match="starting with a letter or digit"):
        check_job_id(job)


# The backlog limit of publish

def test_readme_backlog_check_names_chunk():
    text = prose(README)

    assert f"A file is published in chunks of {DEFAULT_CHUNK_SIZE:,} rows" in text
    assert f"the backlog can pass the limit by up to {DEFAULT_CHUNK_SIZE:,} rows" in text
    assert "With `--max-backlog 5`, a 30-row file published to an empty backlog leaves 30 unread entries" in text


@one_server
def test_chunk_passes_backlog_limit_whole(sync_client, keys):
    """The README's example: 30 rows go out as one chunk past a limit of 5, and the next publish waits."""
    first = Producer(sync_client, keys, max_backlog=5, dedup_window_seconds=0)
    summary = first.publish_many(purchase(number) for number in range(30))

    assert summary.published == 30
    assert summary.chunks == 1
    assert backlog(sync_client, keys.transactions, keys.group()) == 30

    second = Producer(sync_client, keys, max_backlog=5, dedup_window_seconds=0,
                      poll_seconds=0.02, max_wait_seconds=0.1)
    with pytest.raises(BacklogTimeout):
        second.publish_many([purchase(30)])
    assert sync_client.xlen(keys.transactions) == 30


# Preset date forms

def documented_form(strptime_format: str) -> str:
    """Return how the docs write a preset's date format, such as MM-DD-YYYY HH:MM:SS."""
    if strptime_format == "iso":
        return "ISO 8601"
    if strptime_format.endswith(" %a"):
        return "weekday"
    form = strptime_format
    for directive, notation in NOTATION.items():
        form = form.replace(directive, notation)
    return form


def test_input_formats_lists_preset_dates():
    dates = paragraph_with(INPUT_FORMATS, "Dates are read as UTC")

    for layout in BANK_LAYOUTS:
        for strptime_format in layout.timestamp_formats:
            assert documented_form(strptime_format) in dates, (layout.name, strptime_format)


def test_input_formats_names_presets_with_own_dates():
    dates = paragraph_with(INPUT_FORMATS, "Dates are read as UTC")
    own_dates = [layout.name for layout in BANK_LAYOUTS if layout.timestamp_formats != US_DATE_FORMATS]

    assert own_dates == ["amex-short", "capital-one", "mint", "mercury", "plaid-csv"]
    for name in own_dates:
        spelled = name.replace("-", " ").title()
        assert name in dates or spelled in dates, name


def test_mercury_date_example_in_doc():
    assert "`04-17-2024 21:30:40`" in paragraph_with(INPUT_FORMATS, "Dates are read as UTC")

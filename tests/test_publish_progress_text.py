"""How far a stopped publish got: the share of the file in the interruption message.

A file of up to 5 MB is read whole for the row-order check before any row
is published, so its bytes are all read while few rows are. The message
then gives the share of its rows. Otherwise it gives a share of bytes,
and only below 100%, where that share reflects the rows read.
"""

from __future__ import annotations

import threading

from conftest import one_server
from producer import FileSummary, publish_file
from rewardpilot.cli.publish_cmd import publish_progress_text
from test_cli_interrupt import write_rows
from test_publish_interrupt import StopAfterFirstChunk


def stopped_summary(**fields) -> FileSummary:
    return FileSummary(source="big.csv", rows=500, published=0, unpublished=500, stopped=True, **fields)


def test_progress_share_of_rows():
    summary = stopped_summary(size_bytes=1_700_000, bytes_read=1_700_000, total_rows=16_247)

    assert publish_progress_text(summary) == "0 rows published, of 500 read (3% of the 16,247 rows of big.csv)"


def test_progress_bytes_all_read_without_rows():
    summary = stopped_summary(size_bytes=40_000, bytes_read=40_000)

    text = publish_progress_text(summary)

    assert text == "0 rows published, of 500 read (from big.csv)"
    assert "100%" not in text


def test_progress_share_of_bytes_marked():
    summary = stopped_summary(size_bytes=80_000_000, bytes_read=20_000_000)

    assert publish_progress_text(summary) == "0 rows published, of 500 read (about 25% of big.csv, by bytes read)"


def test_progress_stdin_has_no_share():
    summary = stopped_summary()
    summary.source = "<stdin>"

    assert publish_progress_text(summary) == "0 rows published, of 500 read (from stdin)"


@one_server
def test_file_read_whole_counts_rows(sync_client, keys, tmp_path):
    source = write_rows(tmp_path / "small.csv", 1_000)
    producer = StopAfterFirstChunk(sync_client, keys, chunk_size=100, max_backlog=None, stop=threading.Event())

    summary = publish_file(sync_client, keys, source, producer=producer, rejects_path=tmp_path / "r.jsonl",
                           progress=False)

    assert summary.stopped
    assert summary.bytes_read == summary.size_bytes
    assert summary.total_rows == 1_000
    assert summary.rows == 200
    assert publish_progress_text(summary).endswith(f"of 200 read (20% of the 1,000 rows of {source})")

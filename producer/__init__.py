"""The producer: read transactions from CSV or JSON lines, validate them, publish them.

``read_transactions`` yields one outcome per row; ``Producer`` publishes with
pipelined XADD; ``publish_file`` does both for a file and records every row
it did not publish in a rejects file.
"""

from producer.errors import (
    BacklogTimeout, InputError, InvalidOptionError, InvalidValueError, NotATransactionError, PartitionCountError,
    ProducerError, PublishInterrupted, PublishStopped, RowError, UnsupportedClientError,
)
from producer.files import FileSummary, exit_status, format_summary, publish_file
from producer.layouts import DOCUMENTED, TABFORMER, Layout, detect_layout, load_layout
from producer.publisher import Producer, PublishSummary, backlog, wait_for_backlog
from producer.readers import Outcome, Rejected, Row, Skipped, read_transactions
from producer.rejects import RejectsFileError

__all__ = [
    "BacklogTimeout", "InputError", "InvalidOptionError", "InvalidValueError", "NotATransactionError",
    "PartitionCountError", "ProducerError", "PublishInterrupted", "PublishStopped", "RowError",
    "UnsupportedClientError",
    "FileSummary", "exit_status", "format_summary", "publish_file",
    "DOCUMENTED", "TABFORMER", "Layout", "detect_layout", "load_layout",
    "Producer", "PublishSummary", "backlog", "wait_for_backlog",
    "Outcome", "Rejected", "Row", "Skipped", "read_transactions", "RejectsFileError",
]

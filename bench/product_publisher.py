"""A gated child running the product's file publisher, as ``rewardpilot publish FILE`` does.

    python -m bench.product_publisher --url URL --prefix P --job J --file CSV [--max-backlog N]

Prints ``ready``, waits for a line on stdin, then calls ``publish_file``
(read, validate, record rejects, pipelined XADD). Prints the summary, the
seconds it took and the process's peak RSS as JSON.

The peak RSS is VmHWM from /proc/self/status (Linux). ``ru_maxrss`` is not
used because Linux keeps it across exec and Python starts children with
vfork, so it reports the benchmark parent's peak whenever that is larger.
The parent passes 95 MB while it generates a 1,000,000-row CSV.

NOTE: ``rewardpilot publish`` itself keeps the producer's default backlog
limit of 100,000 unread entries, and waits without end while no consumer
reads. With no ``--max-backlog`` this child turns the limit off, so that
it can publish a whole file before any consumer starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench.procs import peak_rss_kib
from producer import Producer, publish_file
from rewardpilot import logs
from rewardpilot.connection import connect
from rewardpilot.streams import StreamKeys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Publish a file as a benchmark child.")
    parser.add_argument("--url", required=True, help="Redis URL")
    parser.add_argument("--prefix", required=True, help="key prefix")
    parser.add_argument("--job", required=True, help="job whose transactions stream to publish to")
    parser.add_argument("--file", required=True, help="CSV file in the documented layout")
    parser.add_argument("--rejects", required=True, help="where rejected rows go")
    parser.add_argument("--max-backlog", type=int, default=None, help="unread entries above which publishing waits; unset for no limit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure("WARNING")
    client = connect(args.url)
    keys = StreamKeys(prefix=args.prefix, job=args.job)
    producer = Producer(client, keys, max_backlog=args.max_backlog)
    client.ping()

    print("ready", flush=True)
    sys.stdin.readline()

    started = time.perf_counter()
    cpu_started = time.process_time()
    summary = publish_file(client, keys, args.file, producer=producer, progress=False, rejects_path=args.rejects)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started

    _, peak_kib = peak_rss_kib(os.getpid())
    report = {
        "published": summary.published, "rejected": summary.rejected, "duplicates": summary.duplicates,
        "rows": summary.rows, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_kib": peak_kib,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()

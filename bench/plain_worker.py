"""The Python floor: a plain redis-py (hiredis) loop doing only the pipeline's stream work.

    python -m bench.plain_worker publish --url URL --stream S --file CSV
    python -m bench.plain_worker consume --url URL --stream S --group G --results R --stop-key K

``publish`` adds every transaction of the file, already encoded as the
product encodes it, with XADD pipelined 1,000 at a time. ``consume`` reads
XREADGROUP COUNT 500, then sends one pipeline per batch that adds one result
per entry and XACKs the batch. Each result is a real recommendation's JSON,
the same bytes every time. It stops on an empty read once the stop key
exists. Both are gated
children (see ``bench.procs``) and print a JSON report.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

import redis

from rewardpilot import codec
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction

PUBLISH_CHUNK = 1000
READ_COUNT = 500
BLOCK_MS = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Plain redis-py stream loop (benchmark child).")
    parser.add_argument("mode", choices=["publish", "consume"])
    parser.add_argument("--url", required=True, help="Redis URL")
    parser.add_argument("--stream", required=True, help="transactions stream")
    parser.add_argument("--file", help="CSV to publish (publish mode)")
    parser.add_argument("--group", help="consumer group (consume mode)")
    parser.add_argument("--consumer", default="plain-1", help="consumer name (consume mode)")
    parser.add_argument("--results", help="results stream (consume mode)")
    parser.add_argument("--stop-key", help="key whose existence ends consume mode on an empty read")
    return parser.parse_args(argv)


def load_payloads(path: str) -> list[bytes]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [codec.encode_transaction(Transaction(**row))[codec.DATA].encode() for row in csv.DictReader(handle)]


def sample_result() -> bytes:
    """Return one real recommendation's JSON, the size of every result the product writes."""
    transaction = Transaction(
        transaction_id="plain-sample", user_id="plain-user", merchant="Whole Foods Market",
        category="groceries", amount_usd="84.20", mcc="5411",
    )
    return RulesEngine.default().recommend(transaction, None, wallet_source="catalog").model_dump_json().encode()


def publish(client: redis.Redis, stream: str, payloads: list[bytes]) -> int:
    for start in range(0, len(payloads), PUBLISH_CHUNK):
        pipeline = client.pipeline(transaction=False)
        for payload in payloads[start:start + PUBLISH_CHUNK]:
            pipeline.xadd(stream, {b"data": payload})
        pipeline.execute()
    return len(payloads)


def consume(client: redis.Redis, args: argparse.Namespace, result: bytes) -> int:
    handled = 0
    while True:
        reply = client.xreadgroup(args.group, args.consumer, {args.stream: ">"}, count=READ_COUNT, block=BLOCK_MS)
        if not reply:
            if client.exists(args.stop_key):
                return handled
            continue
        entries = reply[0][1]
        pipeline = client.pipeline(transaction=False)
        for entry_id, _fields in entries:
            pipeline.xadd(args.results, {b"data": result, b"user_id": b"plain-user", b"transaction_id": entry_id})
        pipeline.xack(args.stream, args.group, *[entry_id for entry_id, _ in entries])
        pipeline.execute()
        handled += len(entries)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    client = redis.Redis.from_url(args.url, socket_timeout=30)
    if args.mode == "publish":
        prepared = load_payloads(args.file)
    else:
        prepared = sample_result()
    client.ping()

    print("ready", flush=True)
    sys.stdin.readline()

    started = time.perf_counter()
    cpu_started = time.process_time()
    if args.mode == "publish":
        count = publish(client, args.stream, prepared)
    else:
        count = consume(client, args, prepared)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    print(json.dumps({"count": count, "seconds": seconds, "cpu_seconds": cpu_seconds}), flush=True)


if __name__ == "__main__":
    main()

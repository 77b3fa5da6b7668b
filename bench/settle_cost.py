"""Server CPU per result of the settle step, the product's script against plain commands.

    python -m bench.settle_cost [--results 100000]

Against a private server, one client writes ``--results`` results of the
product's own size in batches of 500, four ways, and the server's
``used_cpu_user + used_cpu_sys`` from INFO is read around each:

- plain: a pipeline of XADD per result and one XACK per batch, as the plain loop does;
- plain with markers: the same, plus a ``SET marker entry EX ttl`` per result;
- settle script: ``consumer/settle.lua`` as the consumer calls it (no cap state);
- settle script without markers: the same script with its ``SET ... NX`` check removed.

The first and the third differ by what the consumer's atomic, once-only
settle costs the server beyond the plain loop's work. Each way runs twice,
alternating, and every figure is printed.

NOTE: only the server's CPU is measured here, not the client's. The entries
being settled carry a tiny payload, added and read just before.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import redis

from bench.server import BenchServer
from consumer.settle import _SCRIPT
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction

BATCH = 500
MARKER_TTL_SECONDS = 86_400
_MARKER_CHECK = "if not set_marker(marker, entry, true) then"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Server CPU per result of the settle step.")
    parser.add_argument("--results", type=int, default=100_000, help="results per measurement (default 100,000)")
    return parser.parse_args(argv)


def sample_result() -> bytes:
    transaction = Transaction(transaction_id="settle-sample", user_id="u1", merchant="CVS Pharmacy",
                              category="drugstore", amount_usd="17.23", mcc="5912")
    return RulesEngine.default().recommend(transaction, None, wallet_source="catalog").model_dump_json().encode()


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def pending_entries(client: redis.Redis, stream: str, count: int) -> list[bytes]:
    """Add ``count`` tiny entries to ``stream`` and read them into group ``g``; return their ids."""
    for start in range(0, count, 1000):
        pipeline = client.pipeline(transaction=False)
        for _ in range(min(1000, count - start)):
            pipeline.xadd(stream, {"data": b"t"})
        pipeline.execute()
    client.xgroup_create(stream, "g", id="0")
    ids: list[bytes] = []
    while reply := client.xreadgroup("g", "c1", {stream: ">"}, count=10_000):
        ids += [entry_id for entry_id, _ in reply[0][1]]
    return ids


def plain(client: redis.Redis, tag: str, ids: list[bytes], payload: bytes, markers: bool) -> None:
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]
        pipeline = client.pipeline(transaction=False)
        for entry_id in batch:
            pipeline.xadd(f"{tag}:results", {"data": payload, "user_id": "u1", "transaction_id": entry_id})
            if markers:
                pipeline.set(f"{tag}:done:".encode() + entry_id, entry_id, ex=MARKER_TTL_SECONDS)
        pipeline.xack(f"{tag}:transactions", "g", *batch)
        pipeline.execute()


def scripted(client: redis.Redis, tag: str, ids: list[bytes], payload: bytes, script: str) -> None:
    sha = client.script_load(script)
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]
        args: list = [f"{tag}:results", f"{tag}:dead", f"{tag}:transactions", "g", MARKER_TTL_SECONDS, 0, 0,
                      f"{tag}:done:", f"{tag}:caps:", len(batch), 0, 0]
        for entry_id in batch:
            args += [entry_id, payload, "u1", entry_id, 0, 0]
        client.evalsha(sha, 3, *args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    payload = sample_result()
    without_markers = _SCRIPT.replace(_MARKER_CHECK, "if false then")
    if without_markers == _SCRIPT:
        print("error: consumer/settle.lua no longer has the marker check this tool removes; update _MARKER_CHECK",
              file=sys.stderr)
        return 1
    ways = {
        "plain": lambda c, tag, ids: plain(c, tag, ids, payload, markers=False),
        "plain with markers": lambda c, tag, ids: plain(c, tag, ids, payload, markers=True),
        "settle script": lambda c, tag, ids: scripted(c, tag, ids, payload, _SCRIPT),
        "settle script without markers": lambda c, tag, ids: scripted(c, tag, ids, payload, without_markers),
    }

    figures: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="rpsettle-") as scratch, BenchServer(Path(scratch) / "valkey") as server:
        client = redis.Redis.from_url(server.url)
        for repetition in range(2):
            for number, (name, settle) in enumerate(ways.items()):
                tag = f"w{repetition}{number}"
                ids = pending_entries(client, f"{tag}:transactions", args.results)
                before = server_cpu(client)
                settle(client, tag, ids)
                figures[name].append((server_cpu(client) - before) * 1e6 / args.results)
                client.flushall()
        client.close()

    print(f"server CPU microseconds per result, {args.results:,} results of {len(payload):,} bytes, batches of {BATCH}")
    for name, values in figures.items():
        print(f"{name:<32}" + "".join(f"{value:>8.2f}" for value in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())

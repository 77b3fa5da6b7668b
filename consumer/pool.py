"""The consumer pool: asyncio workers reading micro-batches from one consumer group.

Each worker loops: read a micro-batch with XREADGROUP COUNT/BLOCK, decode it,
look up wallets, call the recommender (under the shared rate limit, retries
and the circuit breaker), and settle the batch: results, dead letters and
XACK in one atomic round trip. A recovery task claims entries that other
consumers left pending past the visibility timeout.

With the in-process engine, each batch also loads the spend its users have
recorded under caps (``consumer.cap_state``). The settle script applies a
result's spend only if no other consumer changed it since it was loaded.
When one did, the pool loads the spend again and recommends the
conflicting transactions once more, up to ``MAX_CONFLICT_ROUNDS`` times,
then gives them back to the group; a conflict never makes a dead letter.

Delivery is at least once: an entry stays in the group's pending entries list
until its batch is settled, so a crash between read and settle leaves it for
recovery. Results are effectively once, because settlement skips transactions
the run already has an outcome for.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import redis
import redis.asyncio as aioredis
import structlog.contextvars
from pydantic import ValidationError

from consumer import deadletters
from consumer.batch_log import batch_log_fields, distinct_errors
from consumer.breaker import CircuitBreaker
from consumer.cap_state import build_items
from consumer.guarded import GuardedRecommender
from consumer.dlq import transaction_id_of
from consumer.failure_log import RepeatedFailureLog
from consumer.names import consumer_name
from consumer.ratelimit.base import RateLimiter
from consumer.recommenders import InProcessRecommender, ItemError, Recommender, WorkItem
from consumer.recommenders.in_process import engine_error
from consumer.recovery import recovery_loop
from consumer.transports import Delivery, RedisStreamTransport, Transport, TransportError
from consumer.retry import RetryPolicy
from consumer.settings import ConsumerSettings
from consumer.settle import Result, SettleCounts
from consumer.stats import PoolStats
from consumer.wallet_cache import WalletCache
from rewardpilot.codec import decode_transaction
from rewardpilot.engine import RulesEngine
from rewardpilot.logs import RepeatFilter, entry_id_fields, get_logger
from rewardpilot.models import DeadLetter, Transaction
from rewardpilot.partitions import partition_streams
from rewardpilot.retention import trim_loop
from rewardpilot.streams import entry_key

REDIS_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MAX_CONFLICT_ROUNDS = 10  # recommend-and-settle rounds for cap conflicts before giving entries back
LONG_HELD_TIMEOUTS = 5  # a batch in hand longer than this many visibility timeouts is logged
# Allocations between young-generation garbage collections while a pool runs
# (Python's default is 700). See ``_collect_garbage_less_often``.
GC_YOUNG_THRESHOLD = 50_000
# Seconds a cancelled worker still waits for the settle in flight, so that the
# stats count what the script wrote. One settle is one round trip, unless
# Redis is down and the settle is retrying.
SETTLE_WAIT_AFTER_CANCEL_SECONDS = 5.0
# Failures of Redis or the transport, which the worker retries, unlike an error of the engine.
TRANSPORT_ERRORS = (redis.RedisError, TransportError)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _collect_garbage_less_often() -> None:
    """Raise the young generation's threshold to ``GC_YOUNG_THRESHOLD`` allocations, if it is lower.

    A batch of 500 transactions allocates tens of thousands of short-lived
    containers, which reference counting frees. At Python's default of 700
    allocations the cyclic collector still runs dozens of times per batch
    and, every tenth and hundredth time, walks the older generations too.
    ``python -m bench.cpu_budget`` measured the consumer at about 53 us of
    CPU per transaction before and 47 us after, on 2 CPUs.

    NOTE: the threshold is process-wide. It stays raised after the pool
    stops, and it delays the collection of reference cycles, not of other
    garbage.
    """
    young, middle, old = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)



async def _outcome_after_cancel(task: asyncio.Future, seconds: float):
    """Wait up to ``seconds`` for ``task`` after the caller was cancelled; return its result, or None.

    Further cancellations during the wait are absorbed, because the caller
    re-raises its own once this returns. A task still running at the end
    is cancelled, and one that failed returns None.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            task.cancel()
            # Retrieve its outcome when it ends, so asyncio does not report an exception never retrieved.
            task.add_done_callback(lambda ended: ended.cancelled() or ended.exception())
            return None
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            continue
    if task.cancelled() or task.exception() is not None:
        return None
    return task.result()


class ConsumerPool:
    """Runs ``settings.workers`` asyncio workers as one named consumer of a group.

    Raises ``InvalidSettingsError`` (a ValueError, from ``consumer.settings``)
    when a setting changed after the settings were built is out of range.
    """

    def __init__(self, client: aioredis.Redis, settings: ConsumerSettings,
                 recommender: Recommender | None = None, *, limiter: RateLimiter | None = None,
                 breaker: CircuitBreaker | None = None, retry: RetryPolicy | None = None,
                 transport: Transport | None = None):
        settings.check()
        self.client = client
        self.settings = settings
        self.keys = settings.keys
        self.name = settings.consumer or consumer_name()
        self.group = settings.group_name
        self.stream = self.keys.transactions
        self.stats = PoolStats()
        # A job's consumer also logs its job, because within the job's own streams its run is "live".
        scope = {"job": self.keys.job} if self.keys.job else {}
        self.log = get_logger("consumer", consumer=self.name, group=self.group, run=settings.run, **scope)
        self._stopping = asyncio.Event()
        self._stop_requested = False  # by stop(), as opposed to a drain
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop run() runs on
        self._tasks: list[asyncio.Task] = []
        self._grace_timer: asyncio.TimerHandle | None = None
        self._repeats = RepeatFilter()
        # Shared by the workers, so an outage ends with one line, from the first worker that reads again.
        self._transport_failures = RepeatedFailureLog(self.log, interval_seconds=10.0)
        self._server_error_batches = 0  # see _log_server_errors
        self.drained = False  # set when a drain found the group empty, as opposed to a stop or abort

        recommender = recommender or InProcessRecommender()
        # Cap state is kept for a recommender that exposes the rules engine it runs.
        engine = getattr(recommender, "engine", None)
        self.engine: RulesEngine | None = engine if isinstance(engine, RulesEngine) else None
        if breaker is not None:
            breaker.bind_log(consumer=self.name, run=settings.run)
        if limiter is not None:
            limiter.bind_log(consumer=self.name, group=self.group, run=settings.run, **scope)
        self.recommender = GuardedRecommender(
            recommender, stats=self.stats, log=self.log,
            limiter=limiter, breaker=breaker, retry=retry, stopping=self._stopping,
        )
        # Only the in-process engine's catalog is known here. A networked recommender gets the
        # stored wallet as it is, and its own catalog decides.
        self.wallets = WalletCache(client, self.keys, run_wallet=settings.wallet,
                                   ttl_seconds=settings.wallet_cache_seconds,
                                   catalog=self.engine.catalog if self.engine is not None else None,
                                   warn=self._log_repeated)
        self.transport = transport or RedisStreamTransport(client, settings, self.name)
        # The partitioned transport claims entries when it takes a lease, outside the recovery loop.
        attach_stats = getattr(self.transport, "attach_stats", None)
        if attach_stats is not None:
            attach_stats(self.stats)

    # Lifecycle

    def stop(self) -> None:
        """Stop reading; workers finish the batch in hand within the grace period.

        Safe to call from any thread, before ``run()`` and more than once.
        From a thread other than the one running the pool, it schedules the
        stop on the pool's event loop and returns at once, so wait for
        ``run()`` to return to know that the pool has stopped.
        """
        if self._call_on_loop(self.stop):
            return
        if self._stop_requested or self._stopping.is_set():
            return
        self._stop_requested = True
        self.log.info("consumer stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        self._stopping.set()
        if self._loop is not None:
            self._grace_timer = self._loop.call_later(self.settings.shutdown_grace_seconds, self.abort)

    def abort(self) -> None:
        """Cancel the workers now; their unsettled entries stay pending for others to claim.

        Safe to call from any thread, like ``stop``.
        """
        if self._call_on_loop(self.abort):
            return
        self._stopping.set()
        if any(not task.done() for task in self._tasks):
            self.log.warning("consumer aborting; unsettled entries stay pending")
        for task in self._tasks:
            task.cancel()

    def _call_on_loop(self, method) -> bool:
        """Schedule ``method`` on the pool's loop when called from another thread; return whether it did.

        asyncio objects are not thread-safe, so the flag, the grace timer and
        the task cancellations must be touched on the loop's own thread.
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return False
        try:
            if asyncio.get_running_loop() is loop:
                return False
        except RuntimeError:
            pass  # no loop runs in this thread
        loop.call_soon_threadsafe(method)
        return True

    def enable_drain(self) -> None:
        """Stop once the group is drained (used after a job has published everything)."""
        self.settings.drain = True

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_stopping(self) -> None:
        await self._stopping.wait()

    async def run(self) -> PoolStats:
        """Run the workers until stopped or, with ``drain``, until the group is drained.

        ``stop()`` lets the workers settle the batch in hand, within
        ``shutdown_grace_seconds``. Cancelling the task that awaits ``run()``
        (or ``abort()``) cancels the workers at once instead. A settle already
        sent to Redis is still awaited for up to a few seconds, so that the
        returned or ``self.stats`` counts match what was written. A batch not
        yet settled stays pending in the group until the visibility timeout,
        when recovery (in this or another consumer) claims it again: delivery
        is at least once, and the de-duplication markers keep results once.
        """
        self._loop = asyncio.get_running_loop()
        if self._stop_requested and self._grace_timer is None:
            # stop() came before run(), so the grace period starts now.
            self._grace_timer = self._loop.call_later(self.settings.shutdown_grace_seconds, self.abort)
        _collect_garbage_less_often()
        await self._with_redis_retry(self.transport.open)
        self.log.info(
            "consumer started", transport=self.transport.name, stream=self.stream,
            workers=self.settings.workers, batch_size=self.settings.batch_size,
            recommender=self.recommender.name,
        )
        await self._check_recommender()

        self._tasks = [asyncio.create_task(self._worker(index)) for index in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(recovery_loop(self)))
        if self.settings.trim_older_than_seconds:
            age = timedelta(seconds=self.settings.trim_older_than_seconds)
            self._tasks.append(asyncio.create_task(trim_loop(
                self.client, partition_streams(self.keys, self.settings.partitions), age,
                self.settings.trim_interval_seconds, self._stopping,
            )))
        try:
            await asyncio.gather(*self._tasks)
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        finally:
            # Workers also stop on the flag, for a cancellation that redis-py loses (see _keep_claimed).
            self._stopping.set()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self.transport.close()

        self.log.info("consumer stopped", **self.stats.as_dict())
        return self.stats

    # The worker loop

    async def _worker(self, index: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                deliveries = await self.transport.read(self.settings.batch_size, self.settings.block_ms)
                if deliveries:
                    await self.handle(deliveries)
                # A replay with an end id can stop while the stream still grows past it,
                # so its drain check cannot wait for an empty read.
                bounded = self.settings.end_id is not None
                if (bounded or not deliveries) and self.settings.drain and await self.transport.drained():
                    self.log.info("drained", worker=index)
                    self.drained = True
                    self._stopping.set()
                failures = 0
                self._transport_failures.succeeded("transport reachable again; reading resumed", worker=index)
            except (redis.ConnectionError, redis.TimeoutError, TransportError) as exc:
                delay = REDIS_BACKOFF_SECONDS[min(failures, len(REDIS_BACKOFF_SECONDS) - 1)]
                failures += 1
                self._transport_failures.failed("transport unreachable; reconnecting",
                                                error=str(exc), retry_in_seconds=delay)
                await asyncio.sleep(delay)

    async def _check_recommender(self) -> None:
        """Wait for a networked recommender to respond before the workers read, for a bounded time.

        An orchestrator started next to the consumer can take seconds to
        listen. The start-up probes bypass the circuit breaker, so that wait
        does not open it. When the wait runs out, the workers start anyway
        and entries stay pending until the recommender responds. A stop
        during the wait ends it at once. ``GuardedRecommender.wait_until_reachable``
        logs every outcome.
        """
        await self.recommender.wait_until_reachable(drain=self.settings.drain)

    async def _with_redis_retry(self, operation, attempts: int = len(REDIS_BACKOFF_SECONDS)):
        for attempt in range(attempts):
            try:
                return await operation()
            except (redis.ConnectionError, redis.TimeoutError, TransportError) as exc:
                if attempt == attempts - 1:
                    raise
                # Past the last step the delay stays at the longest one: settling retries 20 times.
                delay = REDIS_BACKOFF_SECONDS[min(attempt, len(REDIS_BACKOFF_SECONDS) - 1)]
                self._log_repeated("redis-down", "Redis unreachable; retrying",
                                   error=str(exc), retry_in_seconds=delay)
                await asyncio.sleep(delay)

    def _log_repeated(self, key: str, message: str, *, level: str = "warning", **fields) -> None:
        allowed, suppressed = self._repeats.allow(key)
        if allowed:
            getattr(self.log, level)(message, suppressed_repeats=suppressed, **fields)

    # One micro-batch

    async def handle(self, deliveries: list[Delivery]) -> None:
        """Recommend for a micro-batch and settle it atomically.

        Every line logged while the batch is in hand, by any logger in this
        task or the tasks it starts, carries the consumer and the batch's
        identity (``batch_log_fields``).
        """
        with self._batch_context([delivery.entry_id for delivery in deliveries], deliveries[0].stream):
            await self._handle(deliveries)

    def _batch_context(self, entry_ids: list[str], stream: str | None):
        """Return a context manager that binds the consumer and ``batch_log_fields`` to this task's log lines."""
        partition = stream if stream not in (None, self.stream) else None
        return structlog.contextvars.bound_contextvars(consumer=self.name, **batch_log_fields(entry_ids, partition))

    async def _handle(self, deliveries: list[Delivery]) -> None:
        started = time.perf_counter()
        self.stats.batches += 1
        self.stats.delivered += len(deliveries)
        tally = SettleCounts()  # what this batch's settles wrote, for the debug line

        transactions, dead_letters, skipped = self._decode(deliveries)
        outcomes: list[Result | ItemError] = []
        checks: dict[str, dict[str, int]] = {}
        given_back = 0
        if transactions:
            entry_ids = [entry_id for entry_id, _ in transactions]
            released = asyncio.Event()
            keeper = asyncio.create_task(self._keep_claimed(entry_ids, released))
            try:
                outcomes, checks = await self._recommend(transactions)
            finally:
                released.set()
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            if outcomes is None:
                await self._give_back(entry_ids)
                given_back = len(entry_ids)
                transactions = []
                outcomes = []

        # A batch comes from one stream (one partition, for the partitioned transport).
        batch_stream = deliveries[0].stream or self.stream
        results, rewards = self._collect(transactions, outcomes, dead_letters, started, stream=batch_stream)
        conflicts = await self._settle(results, dead_letters, skipped, rewards, checks, tally=tally)
        if conflicts:
            await self._settle_conflicts(transactions, conflicts, started, batch_stream, tally)
        seconds = time.perf_counter() - started
        self.stats.batch_sizes.observe(len(deliveries))
        self.stats.batch_seconds.observe(seconds)
        self.log.debug("batch settled", results=tally.written, duplicates=tally.duplicates,
                       dead_letters=tally.dead_letters, skipped=len(skipped), given_back=given_back,
                       seconds=round(seconds, 3))

    async def _keep_claimed(self, entry_ids: list[str], released: asyncio.Event) -> None:
        """Touch the entries in hand every third of the visibility timeout until ``released`` is set.

        Retries, Retry-After waits, an open breaker and the rate limiter can
        hold a batch longer than the visibility timeout. Without this,
        recovery would claim the batch again while it is in hand, and every
        claim raises the delivery count towards ``max_deliveries``.

        NOTE: the caller also cancels this task, but the loop stops on
        ``released`` too, because redis-py 8.2's asyncio client can lose a
        cancellation that arrives during a command: the command returns as
        if nothing happened. Cancelling at random moments during XCLAIM, 89
        of the 113 cancellations that landed inside the command were lost.
        A keeper that lost its cancellation kept touching the batch for
        ever, and the handler waiting for it never returned.
        """
        touch = getattr(self.transport, "touch", None)
        if touch is None:
            return
        interval = self.settings.visibility_timeout_ms / 1000 / 3
        started = time.monotonic()
        while not released.is_set():
            await asyncio.sleep(interval)
            if released.is_set():
                return
            try:
                await touch(entry_ids)
            except (redis.ConnectionError, redis.TimeoutError, TransportError) as exc:
                self._log_repeated("touch-failed", "could not refresh entries in hand; recovery may claim them",
                                   error=str(exc), first_entry_id=entry_ids[0])

            # A batch in hand long past the visibility timeout keeps its entries pending,
            # and no other consumer can claim them, so an operator should see it.
            seconds_in_hand = time.monotonic() - started
            if seconds_in_hand > LONG_HELD_TIMEOUTS * self.settings.visibility_timeout_ms / 1000:
                self._log_repeated("batch-held", "batch still in hand, waiting on the recommender",
                                   held_seconds=round(seconds_in_hand, 1), count=len(entry_ids), first_entry_id=entry_ids[0],
                                   breaker=self.recommender.breaker.state.value if self.recommender.breaker else None)

    def _decode(self, deliveries: list[Delivery]):
        """Split a batch into transactions, dead letters (undecodable) and skipped entry ids.

        Entries after ``end_id`` and entries of users other than ``user_filter``
        are skipped: acknowledged without a result.
        """
        transactions: list[tuple[str, Transaction]] = []
        dead_letters: list[DeadLetter] = []
        skipped: list[str] = []
        user_filter = self.settings.user_filter
        end_key = entry_key(self.settings.end_id) if self.settings.end_id else None

        for delivery in deliveries:
            entry_id, fields = delivery.entry_id, delivery.fields
            if end_key is not None and entry_key(entry_id) > end_key:
                skipped.append(entry_id)
                self.stats.past_end += 1
                continue
            try:
                transaction = decode_transaction(fields)
            except (ValidationError, KeyError, ValueError) as exc:
                dead_letters.append(deadletters.from_entry(
                    entry_id, delivery.stream or self.stream, fields, reason="invalid entry",
                    error_type=type(exc).__name__, error=str(exc), consumer=self.name,
                ))
                continue
            if user_filter is not None and transaction.user_id != user_filter:
                skipped.append(entry_id)
                continue
            transactions.append((entry_id, transaction))

        return transactions, dead_letters, skipped

    async def _recommend(self, transactions: list[tuple[str, Transaction]]):
        """Return one outcome per transaction (None after transient failures) and the spend each read."""
        if self.engine is not None:
            built = await self._build_items(transactions)
        else:
            choices = await self.wallets.resolve(tx.user_id for _, tx in transactions)
            built = [WorkItem(tx, *choices[tx.user_id]) for _, tx in transactions]

        items = [entry for entry in built if isinstance(entry, WorkItem)]
        outcomes: list | None = []
        if items:
            item_entry_ids = [entry_id for (entry_id, _), entry in zip(transactions, built)
                              if isinstance(entry, WorkItem)]
            outcomes = await self.recommender.call(items, item_entry_ids)
        if outcomes is None:
            return None, {}

        # Put the outcomes back between the transactions whose items could not be built.
        answered = iter(outcomes)
        merged = [next(answered) if isinstance(entry, WorkItem) else entry for entry in built]
        checks = {
            entry_id: entry.loaded
            for (entry_id, _), entry in zip(transactions, built)
            if isinstance(entry, WorkItem) and entry.state is not None
        }
        return merged, checks

    async def _build_items(self, transactions: list[tuple[str, Transaction]]) -> list[WorkItem | ItemError]:
        """Build the in-process engine's work items; a transaction the engine fails on gets an ItemError.

        The engine runs while the items are built (the spend fields each
        transaction may read). When that raises anything but a Redis or
        transport error, each transaction is built alone to find the ones
        at fault, and the rest are built again together, so they still
        share one spend state. An error that no single transaction raises
        propagates.
        """
        def build(batch):
            return build_items(self.wallets, batch, engine=self.engine, run=self.settings.run,
                               warn=self._log_repeated)

        try:
            return await build(transactions)
        except TRANSPORT_ERRORS:
            raise
        except Exception as exc:
            if len(transactions) == 1:
                return [engine_error(exc, transactions[0][1])]

        failed: dict[int, ItemError] = {}
        for index, pair in enumerate(transactions):
            try:
                await build([pair])
            except TRANSPORT_ERRORS:
                raise
            except Exception as exc:
                failed[index] = engine_error(exc, pair[1])

        good = [pair for index, pair in enumerate(transactions) if index not in failed]
        items = iter(await build(good) if good else [])
        return [failed[index] if index in failed else next(items) for index in range(len(transactions))]

    async def _settle_conflicts(self, transactions, conflicts: list[str], started: float,
                                stream: str | None, tally: SettleCounts | None = None) -> None:
        """Recommend and settle conflicting entries again on freshly loaded spend; give back what still conflicts.

        Each round keeps the entries in stream order, so a user's results
        still come out in order.
        """
        for _ in range(MAX_CONFLICT_ROUNDS):
            self.stats.cap_conflicts += len(conflicts)
            again = set(conflicts)
            batch = [(entry_id, transaction) for entry_id, transaction in transactions if entry_id in again]
            outcomes, checks = await self._recommend(batch)
            if outcomes is None:
                break
            dead_letters: list[DeadLetter] = []
            results, rewards = self._collect(batch, outcomes, dead_letters, started, stream=stream)
            conflicts = await self._settle(results, dead_letters, [], rewards, checks, tally=tally)
            if not conflicts:
                return

        self._log_repeated("cap-conflicts", "entries still in conflict over cap state; given back to the group",
                           rounds=MAX_CONFLICT_ROUNDS, **entry_id_fields(conflicts))
        await self._give_back(conflicts)

    async def _give_back(self, entry_ids: list[str]) -> None:
        await self._with_redis_retry(lambda: self.transport.give_back(entry_ids))

    def _collect(self, transactions, outcomes, dead_letters, started, stream: str | None = None):
        """Stamp each recommendation with its entry and run; turn item errors into dead letters."""
        completed = datetime.now(timezone.utc)
        completed_ms = completed.timestamp() * 1000
        latency = self.stats.latency_seconds
        elapsed_ms = (time.perf_counter() - started) * 1000 / max(1, len(outcomes))
        run = self.settings.run
        recommender = self.recommender.name
        results: list[tuple[str, Result]] = []
        total = Decimal("0")
        # Entries added in the same millisecond (a publisher's chunk often is)
        # share one publish time, so it is built once per millisecond.
        published_ms = -1
        published_at = completed

        for (entry_id, transaction), outcome in zip(transactions, outcomes):
            if isinstance(outcome, ItemError):
                dead_letters.append(deadletters.from_item_error(
                    entry_id, stream or self.stream, transaction, outcome, consumer=self.name,
                ))
                continue
            milliseconds = int(entry_id.partition("-")[0])
            if milliseconds != published_ms:
                published_ms = milliseconds
                published_at = datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc)
            outcome.entry_id = entry_id
            outcome.run = run
            outcome.recommender = recommender
            outcome.published_at = published_at
            latency.observe(max(0.0, completed_ms - milliseconds) / 1000)
            outcome.completed_at = completed
            if not outcome.processing_time_ms:
                outcome.processing_time_ms = round(elapsed_ms, 3)
            total += outcome.cash_value_usd
            results.append((entry_id, outcome))

        return results, total

    async def _settle(self, results, dead_letters, skipped, rewards: Decimal = Decimal("0"),
                      checks: dict[str, dict[str, int]] | None = None, *,
                      tally: SettleCounts | None = None) -> list[str]:
        """Settle with retries and return the entry ids in conflict over cap state.

        The script is idempotent, so a retry after a lost reply is safe. It
        runs in its own task, so a cancelled worker can still wait for the
        reply and count what was written before it lets the cancellation through.
        ``tally``, when given, adds up the counts of what the settle wrote.
        """
        settling = asyncio.ensure_future(self._with_redis_retry(
            lambda: self.transport.settle(results, dead_letters, skipped, checks=checks),
            attempts=20,
        ))
        try:
            counts = await asyncio.shield(settling)
        except asyncio.CancelledError:
            counts = await _outcome_after_cancel(settling, SETTLE_WAIT_AFTER_CANCEL_SECONDS)
            if counts is not None:
                self._count_settled(counts, results, rewards)
                self._log_duplicates(counts, results, dead_letters)
            else:
                self.log.warning("cancelled while settling, and the settle did not finish; its entries may be "
                                 "settled or still pending, and the stats do not count them",
                                 results=len(results), dead_letters=len(dead_letters),
                                 wait_seconds=SETTLE_WAIT_AFTER_CANCEL_SECONDS)
            raise
        self._count_settled(counts, results, rewards)
        self._log_duplicates(counts, results, dead_letters)
        if tally is not None:
            tally.written += counts.written
            tally.duplicates += counts.duplicates
            tally.dead_letters += counts.dead_letters
        # A letter the script skipped as a duplicate was written before, by this run, and is logged there.
        written = [letter for letter in dead_letters if letter.entry_id not in counts.duplicates_of]
        if written:
            fields = entry_id_fields([letter.entry_id for letter in written])
            transaction_ids = {letter.entry_id: transaction_id_of(letter) for letter in written}
            statuses = sorted({letter.http_status for letter in written if letter.http_status is not None})
            self.log.warning(
                "entries dead-lettered", **fields,
                # In the order of entry_ids; None for an entry whose transaction_id could not be read.
                transaction_ids=[transaction_ids[entry_id] for entry_id in fields["entry_ids"]],
                reasons=sorted({letter.reason for letter in written}),
                http_statuses=statuses,
                errors=distinct_errors(written),
            )
            if any(letter.http_status in (401, 403) for letter in written):
                # A bad key turns every call into a dead letter, so the log gives the recovery steps.
                self._log_repeated("auth-rejected", "the recommender rejected this consumer's credentials; check "
                                   "ORCHESTRATOR_API_KEY, then put the entries back with `rewardpilot dlq redrive --all`",
                                   level="error")
        self._log_server_errors(written, counts)
        return counts.conflicts

    def _log_server_errors(self, written: list[DeadLetter], counts: SettleCounts) -> None:
        """Log an error, at most once per ``RepeatFilter`` interval, while the recommender responds with HTTP 5xx.

        A 500 is a permanent failure (``consumer.retry``), so each such
        batch is dead-lettered, and only this line stands out from the
        per-batch warnings. ``batches_in_a_row`` counts the settles with
        5xx letters since the last one that wrote results without them.
        """
        failed = [letter for letter in written if letter.http_status is not None and letter.http_status >= 500]
        if not failed:
            if counts.written:
                self._server_error_batches = 0
            return
        self._server_error_batches += 1
        self._log_repeated(
            "server-errors", "the recommender is failing with HTTP server errors, and each transaction it "
            "fails on is dead-lettered; check the orchestrator's logs, then put the entries back with "
            "`rewardpilot dlq redrive --all`", level="error",
            http_statuses=sorted({letter.http_status for letter in failed}),
            batches_in_a_row=self._server_error_batches, errors=distinct_errors(failed),
        )

    def _count_settled(self, counts: SettleCounts, results, rewards: Decimal) -> None:
        """Add what one settle wrote to the stats; ``rewards`` is the batch's total before conflicts."""
        self.stats.results += counts.written
        self.stats.duplicates += counts.duplicates
        self.stats.repeated_transaction_ids += sum(1 for entry_id, first in counts.duplicates_of.items()
                                                   if entry_id != first)
        self.stats.dead_letters += counts.dead_letters
        if counts.written or counts.duplicates or counts.dead_letters:
            self.stats.last_settled_at = time.monotonic()
        if counts.conflicts:
            conflicting = set(counts.conflicts)
            rewards -= sum((result.cash_value_usd for entry_id, result in results
                            if entry_id in conflicting), Decimal("0"))
        if counts.written:
            # NOTE: when part of a batch was already settled elsewhere (a redelivery),
            # this process still counts the whole batch's rewards in its own stats.
            self.stats.total_rewards_usd += rewards
            now = time.monotonic()
            self.stats.first_result_at = self.stats.first_result_at or now
            self.stats.last_result_at = now

    def _log_duplicates(self, counts: SettleCounts, results, dead_letters: list[DeadLetter]) -> None:
        """Log the entries a settle skipped because the run already has an outcome for their transaction_id.

        An entry whose marker names another entry carries a transaction_id
        published again, after the producer's deduplication window or by a
        producer without it. It gets no new result until the marker expires,
        so it is a warning. An entry whose marker names itself was settled
        before (a retried settle, or a batch claimed by two consumers), and
        it is logged at info. Each kind is logged at most once per
        ``RepeatFilter`` interval, with ``suppressed_repeats`` counting the
        lines held back.
        """
        if not counts.duplicates_of:
            return
        transaction_ids = {entry_id: result.transaction_id for entry_id, result in results}
        transaction_ids.update((letter.entry_id, letter.transaction_id) for letter in dead_letters)
        published_again = {entry_id: first for entry_id, first in counts.duplicates_of.items() if entry_id != first}
        settled_before = [entry_id for entry_id, first in counts.duplicates_of.items() if entry_id == first]

        if published_again:
            fields = entry_id_fields(list(published_again))
            self._log_repeated(
                "published-again",
                "entries skipped without a new result: the run already has an outcome for their transaction_id, "
                "from the entries in first_entry_ids; publish a changed purchase under a new transaction_id",
                **fields,
                # In the order of entry_ids.
                transaction_ids=[transaction_ids.get(entry_id) for entry_id in fields["entry_ids"]],
                first_entry_ids=[published_again[entry_id] for entry_id in fields["entry_ids"]],
                marker_ttl_seconds=self.settings.result_ttl_seconds,
            )
        if settled_before:
            fields = entry_id_fields(settled_before)
            self._log_repeated(
                "settled-before", "entries skipped: already settled, by an earlier settle of the same entries",
                level="info", **fields,
                transaction_ids=[transaction_ids.get(entry_id) for entry_id in fields["entry_ids"]],
            )

    # Dead letters found by recovery

    async def dead_letter_lost(self, entry_ids: list[str], stream: str | None = None) -> None:
        """Record entries deleted from ``stream`` (trimmed) while they were pending; None is the pool's stream."""
        letters = [
            deadletters.from_entry(
                entry_id, stream or self.stream, {}, reason="deleted while pending",
                error_type="EntryDeleted",
                error="the entry was trimmed or deleted from the stream before it was acknowledged",
                consumer=self.name,
            )
            for entry_id in entry_ids
        ]
        with self._batch_context(entry_ids, stream):
            await self._settle([], letters, [])

    async def dead_letter_poison(self, poison: list[tuple[Delivery, int]]) -> None:
        """Record entries delivered more than ``max_deliveries`` times."""
        letters = []
        for delivery, delivered in poison:
            letter = deadletters.from_entry(
                delivery.entry_id, delivery.stream or self.stream, delivery.fields, reason="poison message",
                error_type="TooManyDeliveries",
                error=f"delivered {delivered} times, more than the maximum of {self.settings.max_deliveries}",
                consumer=self.name, attempts=delivered,
            )
            try:
                letter.transaction_id = decode_transaction(delivery.fields).transaction_id
            except (ValidationError, KeyError, ValueError):
                pass
            letters.append(letter)
        stream = poison[0][0].stream if poison else None
        with self._batch_context([delivery.entry_id for delivery, _ in poison], stream):
            await self._settle([], letters, [])

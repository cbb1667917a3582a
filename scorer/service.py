"""The scoring service: the batch cycle between the consumer and the producer.

Delivery is at-least-once. Offsets are committed only after the broker has
acknowledged the result or dead letter of every message before them, so a
crash can repeat the last batch but never skip one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
)
from threadpoolctl import threadpool_limits

from scorer import metrics
from scorer.decode import decode
from scorer.models import ModelManager
from scorer.publish import (
    Encoded,
    Publisher,
    encode_dead_letter,
    encode_shadow,
)
from scorer.score import ScoredBatch, score_events, shadow_scores
from scorer.settings import ScorerSettings
from scorer.summary import DeadLetterSummary
from txrisk.bundle import ModelBundle
from txrisk.contracts import (
    DeadLetter,
    ShadowScore,
    SourceRef,
    TransactionEvent,
    event_model,
)
from txrisk.errors import UserError

logger = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]
T = TypeVar("T")

# How often the service logs a progress line and its dead-letter summary: often
# enough to see it working, rare enough not to flood an operator's log.
PROGRESS_INTERVAL_S = 30.0
# With no records for this long, the run loop asks the broker for metadata to
# tell an idle stream from an unreachable broker: readiness turns 503 within a
# few seconds of an outage, and one small request every 2 s is nothing to a
# broker. Under load the records themselves show the broker is there.
BROKER_CHECK_INTERVAL_S = 2.0
# A check that takes longer counts as failed; a black-holed broker would
# otherwise hold it for the client's whole request timeout.
BROKER_CHECK_TIMEOUT_S = 5.0
# Backoff between checks while the broker is unreachable: it doubles from the
# first to the last, so an outage costs a metadata request every 2 s rather
# than a busy loop, and recovery is seen within 2 s.
BROKER_BACKOFF_S = (0.5, 2.0)
# While the broker stays unreachable, the warning is repeated this often.
OUTAGE_LOG_INTERVAL_S = 30.0
# The longest wait between two publish attempts of one batch.
PUBLISH_BACKOFF_MAX_S = 10.0
# A batch slower than this share of max_poll_interval_ms halves the batch
# size; one faster than a quarter of it doubles it again (up to batch_size).
# Between the two the size stays, so it does not oscillate.
SLOW_BATCH_SHARE = 0.5


class StartupError(UserError):
    """The service cannot start: broker unreachable or topics missing."""


class PublishFailed(UserError):
    """Results could not be published after every attempt; nothing was committed."""


@dataclass
class Counts:
    """What the service has done since it started."""

    consumed: int = 0
    scored: int = 0
    flagged: int = 0
    dead_letters: int = 0
    batches: int = 0
    dead_letter_kinds: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class BatchOutput:
    """A scored batch, already encoded so the event loop only sends bytes."""

    results: ScoredBatch
    dead_letters: list[DeadLetter]
    shadow: list[ShadowScore]
    encoded_results: list[Encoded]
    encoded_dead_letters: list[Encoded]
    encoded_shadow: list[Encoded]


class ScorerService:
    """consume -> decode -> score + explain -> publish -> commit, batch by batch."""

    def __init__(self, settings: ScorerSettings, models: ModelManager) -> None:
        self.settings = settings
        self.models = models
        self.counts = Counts()
        # One worker: batches are scored in order, and the event loop (with the
        # consumer's heartbeats) never waits on the CPU-bound stage.
        # OpenMP thread limits are per calling thread, so they are set inside
        # the worker itself.
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="score",
            initializer=threadpool_limits,
            initargs=(settings.scoring_threads,),
        )
        # Held while a batch is between decode and commit; a rebalance waits
        # for it so a revoked partition's batch is committed by its owner.
        self._cycle = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._publisher: Publisher | None = None
        self._last_progress = time.monotonic()
        self._progress_mark = Counts()
        # Readiness: partitions assigned and the broker reachable. Kept as a
        # plain attribute (read by /readyz) and derived from the two below.
        self.joined = False
        self.connected = True
        self._assigned = False
        # Monotonic time the broker last answered (records or a metadata check).
        self._last_contact = time.monotonic()
        # Records per poll: batch_size, lowered while batches run slow.
        self._batch_limit = settings.batch_size
        self._dead_letter_log = DeadLetterSummary()

    async def start(self) -> None:
        """Connect the producer and the consumer and join the group."""
        s = self.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            acks="all",
            enable_idempotence=s.kafka_idempotence,
            linger_ms=5,
            max_batch_size=256 * 1024,
            request_timeout_ms=s.publish_timeout_ms,
            transactional_id=_transactional_id(s) if s.kafka_transactional else None,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
            # Transactional output is only exactly-once for readers that skip
            # aborted transactions; the input may come from such a producer too.
            isolation_level=(
                "read_committed" if s.kafka_transactional else "read_uncommitted"
            ),
        )
        try:
            await self._producer.start()
            await self._consumer.start()
        except KafkaError as exc:
            await self.close()
            if s.kafka_transactional and not isinstance(exc, KafkaConnectionError):
                raise StartupError(
                    f"the broker at {s.bootstrap_servers} refused a transactional "
                    f"producer ({type(exc).__name__}); TXRISK_KAFKA_TRANSACTIONAL "
                    "needs Apache Kafka, the embedded broker has no transactions"
                ) from exc
            raise StartupError(
                f"cannot reach Kafka at {s.bootstrap_servers} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers"
            ) from exc

        topics = await self._consumer.topics()
        missing = [
            t
            for t in (s.input_topic, s.output_topic, s.dead_letter_topic)
            if t not in topics
        ]
        if missing:
            await self.close()
            raise StartupError(
                f"topics {missing} do not exist on {s.bootstrap_servers}; create them "
                "with `python -m scorer create-topics`"
            )

        self._publisher = Publisher(
            self._producer, s.output_topic, s.dead_letter_topic, s.shadow_topic or None
        )
        input_partitions = self._consumer.partitions_for_topic(s.input_topic) or set()
        await self._publisher.align(len(input_partitions))
        self._consumer.subscribe([s.input_topic], listener=_RebalanceListener(self))
        logger.info(
            "scorer started bootstrap=%s group=%s input=%s output=%s dlq=%s",
            s.bootstrap_servers,
            s.group_id,
            s.input_topic,
            s.output_topic,
            s.dead_letter_topic,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set; the batch in hand is finished first."""
        assert self._consumer is not None
        while not stop.is_set():
            if not await self._broker_reachable(stop):
                continue
            batch = await self._consumer.getmany(
                timeout_ms=self.settings.batch_wait_ms,
                max_records=self._batch_limit,
            )
            if batch:
                self._last_contact = time.monotonic()
                await self.process(batch)
            await metrics.update_lag(self._consumer)
            self._maybe_log_progress()

    async def process(self, batch: Batch) -> None:
        """One batch cycle.

        1. drop partitions revoked since the poll (all of them while the group
           rebalances): their owner rescores them from the last commit
        2. decode, validate, score and explain in the worker thread
        3. publish results and dead letters
        4. wait until the broker acknowledges all of them; 3-4 are retried with
           backoff, and after TXRISK_PUBLISH_ATTEMPTS failures the scorer stops
           (PublishFailed) with nothing committed
        5. commit the next offset of every partition in the batch

        With TXRISK_KAFKA_TRANSACTIONAL, 3-5 are one Kafka transaction.
        """
        assert self._consumer is not None and self._publisher is not None
        publisher = self._publisher
        async with self._cycle:
            if not self._assigned:
                return
            owned = self._consumer.assignment()
            batch = {tp: records for tp, records in batch.items() if tp in owned}
            if not batch:
                return

            # Read once: a swap lands between batches, never inside one.
            bundle, shadow = self.models.active, self.models.shadow
            records = [record for records in batch.values() for record in records]
            metrics.IN_FLIGHT.set(len(records))
            started = time.perf_counter()
            output = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                _decode_and_score,
                bundle,
                shadow,
                records,
                self.settings.top_features,
                self.settings.explain == "flagged",
            )
            scoring_s = time.perf_counter() - started
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}

            async def publish() -> None:
                await publisher.publish(
                    output.encoded_results,
                    output.encoded_dead_letters,
                    output.encoded_shadow,
                )

            if self.settings.kafka_transactional:
                await self._with_retries(lambda: self._in_transaction(publish, offsets))
                acked_at = time.time()
            else:
                await self._with_retries(publish)
                acked_at = time.time()
                await self._commit(offsets)
            metrics.IN_FLIGHT.set(0)
        self._adapt_batch_limit(time.perf_counter() - started)

        self._count(records, output)
        metrics.observe_batch(
            records, output.results, output.dead_letters, scoring_s, acked_at
        )
        logger.debug(
            "batch done size=%d scored=%d dead_letters=%d model_version=%s",
            len(records),
            len(output.results),
            len(output.dead_letters),
            bundle.version,
        )

    async def close(self) -> None:
        """Leave the group and flush the producer; safe to call more than once."""
        self._dead_letter_log.flush(force=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._executor.shutdown(wait=True)

    def run_in_worker(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run CPU-bound work on the scoring thread, after the batch in hand.

        `POST /predict` scores here: one thread keeps the model's native code
        single-threaded, and the explainer is never used by two threads at once.
        """
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The group moved on (this member was too slow or was fenced), or
            # the coordinator failed. Safe to go on: the partitions' owner
            # resumes from the last commit and rescores; a later commit of the
            # same partition covers this one. Duplicates, never a gap.
            logger.warning(
                "commit failed partitions=%s reason=%s; their events will be "
                "scored again by the next owner",
                sorted(f"{tp.topic}/{tp.partition}" for tp in offsets),
                f"{type(exc).__name__}: {exc}",
            )

    async def _with_retries(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run one delivery `attempt` until it succeeds, with doubling backoff.

        After TXRISK_PUBLISH_ATTEMPTS failures, PublishFailed: the scorer stops
        loudly rather than committing past results the broker does not have.
        A retry sends the whole batch again, so a consumer may see identical
        duplicates of what the failed attempt did deliver.
        """
        s = self.settings
        for number in range(1, s.publish_attempts + 1):
            try:
                await attempt()
                return
            except KafkaError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if number == s.publish_attempts:
                    logger.error(
                        "publish failed attempts=%d reason=%s; stopping without "
                        "committing, the batch is scored again after a restart",
                        number,
                        reason,
                    )
                    raise PublishFailed(
                        f"could not publish to {s.output_topic}/"
                        f"{s.dead_letter_topic} after {number} attempts ({reason}); "
                        "no offset was committed past the unpublished results"
                    ) from exc
                delay = min(
                    s.publish_backoff_ms / 1000 * 2 ** (number - 1),
                    PUBLISH_BACKOFF_MAX_S,
                )
                logger.warning(
                    "publish failed attempt=%d/%d reason=%s; retrying in %.1fs, "
                    "offsets stay uncommitted",
                    number,
                    s.publish_attempts,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _in_transaction(
        self, publish: Callable[[], Awaitable[None]], offsets: dict[TopicPartition, int]
    ) -> None:
        """Steps 3-5 as one transaction: results and offsets land together or not."""
        producer = self._producer
        assert producer is not None
        await producer.begin_transaction()
        try:
            await publish()
            await producer.send_offsets_to_transaction(offsets, self.settings.group_id)
            await producer.commit_transaction()
        except BaseException:
            # Aborted output is invisible to read_committed consumers; the
            # attempt is retried as a whole.
            with contextlib.suppress(KafkaError):
                await producer.abort_transaction()
            raise

    async def _broker_reachable(self, stop: asyncio.Event) -> bool:
        """True while the broker answers; during an outage, wait for it.

        While the broker is unreachable nothing is polled or committed,
        readiness says not ready, and a warning repeats every
        OUTAGE_LOG_INTERVAL_S; checks back off up to BROKER_BACKOFF_S[1]. When
        it answers again the consumer rejoins its group, so every partition
        resumes from the committed offset the broker holds, never from a
        position read before the outage (a broker that lost its state, like
        the embedded one after a restart, would otherwise be read past
        events). False only when `stop` is set during an outage.
        """
        if time.monotonic() - self._last_contact < BROKER_CHECK_INTERVAL_S:
            return True
        if await self._check_broker():
            return True

        down_since = last_log = time.monotonic()
        self._set_ready(connected=False)
        logger.warning(
            "broker unreachable bootstrap=%s; scoring paused, checking again with "
            "backoff up to %.0fs",
            self.settings.bootstrap_servers,
            BROKER_BACKOFF_S[1],
        )
        backoff = BROKER_BACKOFF_S[0]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            if stop.is_set():
                return False
            if await self._check_broker():
                break
            backoff = min(backoff * 2, BROKER_BACKOFF_S[1])
            now = time.monotonic()
            if now - last_log >= OUTAGE_LOG_INTERVAL_S:
                logger.warning(
                    "broker still unreachable after %.0fs bootstrap=%s",
                    now - down_since,
                    self.settings.bootstrap_servers,
                )
                last_log = now

        logger.info(
            "broker reachable again after %.1fs; resuming from the committed "
            "offsets once the group has assigned the partitions",
            time.monotonic() - down_since,
        )
        if self._assigned:
            # The group has not rebalanced (it had no time to notice): force it,
            # since only a new assignment resets the positions. Otherwise the
            # rebalance under way does that already.
            self._rejoin()
        self._set_ready(connected=True)
        return True

    async def _check_broker(self) -> bool:
        assert self._consumer is not None
        try:
            await asyncio.wait_for(self._consumer.topics(), BROKER_CHECK_TIMEOUT_S)
        except (KafkaError, TimeoutError):
            return False
        self._last_contact = time.monotonic()
        return True

    def _rejoin(self) -> None:
        """Leave and rejoin the group: positions restart from committed offsets."""
        assert self._consumer is not None
        self._set_ready(assigned=False)
        self._consumer.unsubscribe()
        self._consumer.subscribe(
            [self.settings.input_topic], listener=_RebalanceListener(self)
        )

    def _set_ready(
        self, *, assigned: bool | None = None, connected: bool | None = None
    ) -> None:
        if assigned is not None:
            self._assigned = assigned
        if connected is not None:
            self.connected = connected
        self.joined = self._assigned and self.connected

    def _adapt_batch_limit(self, cycle_s: float) -> None:
        """Halve the batch size after a batch that took over half the poll
        interval; double it again after fast ones.

        A batch longer than max_poll_interval_ms costs this member its
        partitions and is scored again; smaller batches make sure the retry
        fits, so a slow model degrades throughput instead of looping forever.
        """
        interval_s = self.settings.max_poll_interval_ms / 1000
        if cycle_s > interval_s * SLOW_BATCH_SHARE and self._batch_limit > 1:
            self._batch_limit = max(1, self._batch_limit // 2)
            logger.warning(
                "slow batch took=%.1fs max_poll_interval=%.0fs; batch size "
                "lowered to %d",
                cycle_s,
                interval_s,
                self._batch_limit,
            )
        elif (
            cycle_s < interval_s * SLOW_BATCH_SHARE / 2
            and self._batch_limit < self.settings.batch_size
        ):
            self._batch_limit = min(self.settings.batch_size, self._batch_limit * 2)

    def _count(self, records: Sequence[ConsumerRecord], output: BatchOutput) -> None:
        c = self.counts
        c.batches += 1
        c.consumed += len(records)
        c.scored += len(output.results)
        c.flagged += output.results.flagged_count
        c.dead_letters += len(output.dead_letters)
        for letter in output.dead_letters:
            c.dead_letter_kinds[letter.error] += 1
        self._dead_letter_log.add(output.dead_letters)

    def _maybe_log_progress(self) -> None:
        self._dead_letter_log.flush()
        now = time.monotonic()
        elapsed = now - self._last_progress
        if elapsed < PROGRESS_INTERVAL_S:
            return
        c, mark = self.counts, self._progress_mark
        if c.consumed != mark.consumed:
            logger.info(
                "progress scored=%d flagged=%d dead_letters=%d rate=%.0f/s kinds=%s",
                c.scored - mark.scored,
                c.flagged - mark.flagged,
                c.dead_letters - mark.dead_letters,
                (c.consumed - mark.consumed) / elapsed,
                dict(c.dead_letter_kinds),
            )
        self._last_progress = now
        self._progress_mark = Counts(
            consumed=c.consumed,
            scored=c.scored,
            flagged=c.flagged,
            dead_letters=c.dead_letters,
        )


def _decode_and_score(
    bundle: ModelBundle,
    shadow: ModelBundle | None,
    records: Sequence[ConsumerRecord],
    top_k: int,
    flagged_only: bool = False,
) -> BatchOutput:
    """The CPU-bound part of a batch, run in the worker thread."""
    event_type = event_model(bundle.spec)
    events: list[TransactionEvent] = []
    partitions: list[int] = []
    dead_letters: list[DeadLetter] = []

    for record in records:
        source = SourceRef(
            topic=record.topic, partition=record.partition, offset=record.offset
        )
        decoded = decode(record.value, record.key, source, event_type)
        if isinstance(decoded, DeadLetter):
            dead_letters.append(decoded)
        else:
            events.append(decoded)
            partitions.append(record.partition)

    scored = score_events(bundle, events, top_k, datetime.now(UTC), flagged_only)
    shadowed = shadow_scores(shadow, scored) if shadow is not None else []
    return BatchOutput(
        results=scored,
        dead_letters=dead_letters,
        shadow=shadowed,
        encoded_results=scored.encoded(partitions),
        encoded_dead_letters=[encode_dead_letter(letter) for letter in dead_letters],
        encoded_shadow=[
            encode_shadow(score, partition)
            for score, partition in zip(shadowed, partitions, strict=False)
        ],
    )


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: ScorerService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in hand publish and commit while this member still
        # owns its partitions.
        async with self._service._cycle:
            pass
        self._service._set_ready(assigned=False)
        metrics.forget_partitions(revoked)
        if revoked:
            logger.info("partitions revoked %s", _names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._service._set_ready(assigned=True)
        logger.info("partitions assigned %s", _names(assigned))


def _transactional_id(settings: ScorerSettings) -> str:
    return settings.transactional_id or f"{settings.group_id}-{socket.gethostname()}"


def _names(partitions: set[TopicPartition]) -> str:
    return ",".join(sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)) or "-"

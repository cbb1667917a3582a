"""The scoring service: the batch cycle between the consumer and the producer.

Delivery is at-least-once. Offsets are committed only after the broker has
acknowledged the result or dead letter of every message before them, so a
crash can repeat the last batch but never skip one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
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


class StartupError(UserError):
    """The service cannot start: broker unreachable or topics missing."""


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
        self.joined = False
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
        )
        try:
            await self._producer.start()
            await self._consumer.start()
        except KafkaError as exc:
            await self.close()
            raise StartupError(
                f"cannot reach Kafka at {s.bootstrap_servers} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers"
            ) from exc

        topics = await self._consumer.topics()
        missing = [
            t for t in (s.input_topic, s.output_topic, s.dead_letter_topic) if t not in topics
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
            batch = await self._consumer.getmany(
                timeout_ms=self.settings.batch_wait_ms,
                max_records=self.settings.batch_size,
            )
            if batch:
                await self.process(batch)
            await metrics.update_lag(self._consumer)
            self._maybe_log_progress()

    async def process(self, batch: Batch) -> None:
        """One batch cycle.

        1. drop partitions revoked since the poll: their new owner rescores them
        2. decode, validate, score and explain in the worker thread
        3. publish results and dead letters
        4. wait until the broker acknowledges all of them
        5. commit the next offset of every partition in the batch
        """
        assert self._consumer is not None and self._publisher is not None
        async with self._cycle:
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

            await self._publisher.publish(
                output.encoded_results, output.encoded_dead_letters, output.encoded_shadow
            )
            acked_at = time.time()

            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            await self._commit(offsets)
            metrics.IN_FLIGHT.set(0)

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
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (this member was too slow or was fenced); the
            # partitions' next owner resumes from the last commit and rescores.
            logger.warning(
                "commit failed partitions=%s reason=%s; their events will be "
                "scored again by the next owner",
                sorted(f"{tp.topic}/{tp.partition}" for tp in offsets),
                exc,
            )

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
    dead_letters: list[DeadLetter] = []

    for record in records:
        source = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)
        decoded = decode(record.value, record.key, source, event_type)
        if isinstance(decoded, DeadLetter):
            dead_letters.append(decoded)
        else:
            events.append(decoded)

    scored = score_events(bundle, events, top_k, datetime.now(UTC), flagged_only)
    shadowed = shadow_scores(shadow, scored) if shadow is not None else []
    return BatchOutput(
        results=scored,
        dead_letters=dead_letters,
        shadow=shadowed,
        encoded_results=scored.encoded(),
        encoded_dead_letters=[encode_dead_letter(letter) for letter in dead_letters],
        encoded_shadow=[encode_shadow(score) for score in shadowed],
    )


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: ScorerService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in hand publish and commit while this member still
        # owns its partitions.
        async with self._service._cycle:
            pass
        self._service.joined = False
        metrics.forget_partitions(revoked)
        if revoked:
            logger.info("partitions revoked %s", _names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._service.joined = True
        logger.info("partitions assigned %s", _names(assigned))


def _names(partitions: set[TopicPartition]) -> str:
    return ",".join(sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)) or "-"

"""Every Prometheus metric of the scorer, defined once.

| metric | type | labels | meaning |
|---|---|---|---|
| `txrisk_events_consumed_total` | counter | | messages read from the input topic |
| `txrisk_events_scored_total` | counter | | events scored and published |
| `txrisk_events_flagged_total` | counter | | scored events at or over the threshold |
| `txrisk_dead_letters_total` | counter | `reason` | messages dead-lettered, by kind |
| `txrisk_batch_size_events` | histogram | | messages per batch |
| `txrisk_batch_scoring_seconds` | histogram | | decode, score, explain, encode |
| `txrisk_explanation_seconds` | histogram | | explaining one scored batch |
| `txrisk_end_to_end_latency_seconds` | histogram | | produce time to publish ack |
| `txrisk_fraud_probability_ratio` | histogram | | probabilities published |
| `txrisk_consumer_lag_messages` | gauge | `topic`, `partition` | not yet consumed |
| `txrisk_in_flight_events` | gauge | | polled, not yet committed |
| `txrisk_model_info` | info | `version`, ... | the serving model |
| `txrisk_model_swaps_total` | counter | `outcome` | model announcements, by outcome |
| `txrisk_http_requests_total` | counter | `handler`, `status` | HTTP requests |
| `txrisk_http_request_seconds` | histogram | `handler` | HTTP request handling |

Each scorer process serves its own registry on its own port (TXRISK_HTTP_PORT),
and Prometheus tells the processes apart by their `instance` label, so several
scorers on one host need no multiprocess mode: plain per-process registries are
right. The stream's counters count stream traffic only; `/predict` shows up in
the HTTP metrics (and in the explanation time, which both paths share).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, get_args

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from txrisk.bundle import BundleMetadata
from txrisk.contracts import DeadLetter, DeadLetterKind

if TYPE_CHECKING:
    # Only for annotations: scorer.score itself imports this module.
    from scorer.score import ScoredBatch

# A registry of our own rather than the library's global one: tests and the
# name checks see exactly the scorer's metrics, plus the process collectors.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# Prometheus' classic text format; every Prometheus 2.x parses it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Up to twice the largest sensible TXRISK_BATCH_SIZE.
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# From a one-event batch (about a millisecond) to a stalled one.
SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# 0.05 is a bucket edge so the p99 > 50 ms alert reads an exact bucket.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Fine below 0.05, where the thresholds of ~1%-fraud models sit.
PROBABILITY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
    0.99,
    1.0,
)

EVENTS_CONSUMED = Counter(
    "txrisk_events_consumed_total",
    "Messages read from the input topic.",
    registry=REGISTRY,
)
EVENTS_SCORED = Counter(
    "txrisk_events_scored_total",
    "Events scored and published as risk results.",
    registry=REGISTRY,
)
EVENTS_FLAGGED = Counter(
    "txrisk_events_flagged_total",
    "Published risk results at or over the model's threshold.",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "txrisk_dead_letters_total",
    "Messages published to the dead-letter topic, by reason (error kind).",
    ["reason"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "txrisk_batch_size_events",
    "Messages per consumed batch.",
    buckets=BATCH_SIZE_BUCKETS,
    registry=REGISTRY,
)
BATCH_SCORING = Histogram(
    "txrisk_batch_scoring_seconds",
    "Decoding, scoring, explaining and encoding one batch, in the worker thread.",
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
EXPLANATION = Histogram(
    "txrisk_explanation_seconds",
    "Explaining one scored batch (stream and /predict).",
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
END_TO_END = Histogram(
    "txrisk_end_to_end_latency_seconds",
    "From the input record's Kafka timestamp to the broker's ack of its output.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
PROBABILITY = Histogram(
    "txrisk_fraud_probability_ratio",
    "Fraud probabilities of the published risk results.",
    buckets=PROBABILITY_BUCKETS,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "txrisk_consumer_lag_messages",
    "Messages on an assigned partition not yet consumed (high watermark - position).",
    ["topic", "partition"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "txrisk_in_flight_events",
    "Messages polled and not yet committed.",
    registry=REGISTRY,
)
MODEL = Info(
    "txrisk_model",
    "The model serving the stream and /predict.",
    registry=REGISTRY,
)
MODEL_SWAPS = Counter(
    "txrisk_model_swaps_total",
    "Model announcements handled, by outcome (swapped, refused, shadowed).",
    ["outcome"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "txrisk_http_requests_total",
    "HTTP requests, by handler and status code.",
    ["handler", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "txrisk_http_request_seconds",
    "Handling one HTTP request, by handler.",
    ["handler"],
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)

# Present from the start at zero, so `increase()` in the alert rules sees the
# first refusal (a series born at 1 shows no increase).
SWAP_OUTCOMES = ("swapped", "refused", "shadowed")
for _outcome in SWAP_OUTCOMES:
    MODEL_SWAPS.labels(_outcome)
DEAD_LETTER_REASONS: tuple[str, ...] = get_args(DeadLetterKind)
for _reason in DEAD_LETTER_REASONS:
    DEAD_LETTERS.labels(_reason)

# The lag gauge is refreshed at most this often while idle: lag only needs the
# resolution of a scrape interval, and each refresh walks every partition.
LAG_INTERVAL_S = 1.0
# `position()` answers at once for a partition that has a position; one that is
# still being reset is skipped rather than stalling the batch cycle.
POSITION_TIMEOUT_S = 0.05
_last_lag_update = 0.0
# Set by each batch: the next refresh runs at once, so the gauge reflects the
# fetch that brought the batch rather than one up to a second old.
_lag_stale = True


def render() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)


def names() -> dict[str, str]:
    """Each txrisk metric's name as written in queries, with its type.

    Counters end in `_total`, info metrics in `_info`; histograms are named by
    their base name (queries add `_bucket`, `_sum`, `_count`).
    """
    found: dict[str, str] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("txrisk_"):
            continue
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        found[family.name + suffix] = family.type
    return found


def observe_batch(
    records: Sequence[ConsumerRecord],
    results: ScoredBatch,
    dead_letters: Sequence[DeadLetter],
    scoring_s: float,
    acked_at: float,
) -> None:
    """Count one published and committed batch; `acked_at` is epoch seconds."""
    EVENTS_CONSUMED.inc(len(records))
    EVENTS_SCORED.inc(len(results))
    EVENTS_FLAGGED.inc(results.flagged_count)
    for letter in dead_letters:
        DEAD_LETTERS.labels(letter.error).inc()
    global _lag_stale
    _lag_stale = True
    BATCH_SIZE.observe(len(records))
    BATCH_SCORING.observe(scoring_s)
    for probability in results.probabilities.tolist():
        PROBABILITY.observe(probability)
    for record in records:
        # Kafka timestamps are epoch milliseconds (producer create time unless
        # the topic uses log-append time); a clock ahead of ours counts as 0.
        if record.timestamp is not None and record.timestamp >= 0:
            END_TO_END.observe(max(0.0, acked_at - record.timestamp / 1000))


async def update_lag(consumer: AIOKafkaConsumer, force: bool = False) -> None:
    """Refresh the lag of every assigned partition: after each batch, and at
    most once per interval while idle."""
    global _last_lag_update, _lag_stale
    now = time.monotonic()
    if not (force or _lag_stale) and now - _last_lag_update < LAG_INTERVAL_S:
        return
    _last_lag_update, _lag_stale = now, False
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            # No fetch response for this partition yet.
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - revoked or resetting: try next time
            continue
        lag = max(0, highwater - position)
        CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)


def forget_partitions(partitions: Iterable[TopicPartition]) -> None:
    """Drop the lag of partitions this process no longer owns; their new owner
    reports them, and a stale value here would be summed twice."""
    for tp in partitions:
        # Never reported here if it was revoked before its first fetch.
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(tp.topic, str(tp.partition))


def set_active_model(version: str, meta: BundleMetadata | None = None) -> None:
    """Call whenever a model starts serving (first load and every swap)."""
    labels = {"version": version}
    if meta is not None:
        labels |= {
            "estimator": meta.estimator,
            "spec": meta.spec.name,
            "threshold": f"{meta.threshold:.6g}",
            "created_at": meta.created_at.isoformat(),
        }
    MODEL.info(labels)


def record_swap(outcome: str, version: str) -> None:
    """Call once per handled announcement: outcome is swapped, refused or shadowed.

    `version` is the candidate's; it is not a label (a label per version would
    grow without bound), the model log line carries it.
    """
    MODEL_SWAPS.labels(outcome).inc()

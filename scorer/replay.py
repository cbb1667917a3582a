"""The gateway simulator: replays a data file into the input topic as events.

It also mixes in malformed messages on request, so the dead-letter path can be
watched working in a demo.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from trainer.data import load_dataset, to_events
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

# Rows are turned into events in chunks so that a large file replays without
# holding every event in memory at once.
CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None


def file_messages(
    path: Path, spec: FeatureSpec, count: int | None
) -> Iterator[Message]:
    """The first `count` rows of a labelled file as event messages, in file order."""
    dataset = load_dataset(path, spec)
    total = len(dataset.y) if count is None else min(count, len(dataset.y))
    for start in range(0, total, CHUNK_ROWS):
        rows = np.arange(start, min(start + CHUNK_ROWS, total))
        for event in to_events(dataset, spec, rows):
            yield Message(key=event["tx_id"].encode(), value=orjson.dumps(event))


def malformed_messages(spec: FeatureSpec, seed: int) -> Iterator[Message]:
    """An endless mix of every kind of message the scorer must dead-letter."""
    rng = random.Random(seed)
    number = next(iter(spec.numeric), None)
    samples = [
        Message(b"bad-json", b'{"tx_id": "bad-json", "amount": '),
        Message(b"bad-utf8", b'{"tx_id": "bad-utf8", "note": "\xff\xfe"}'),
        Message(None, b'["not", "an", "object"]'),
        Message(None, b'{"note": "no id"}'),
        Message(b"nan", b'{"tx_id": "nan", "amount": NaN}'),
        Message(b"empty", b""),
        Message(b"empty-id", b'{"tx_id": ""}'),
    ]
    if number is not None:
        field = number.encode()
        samples += [
            Message(b"negative", b'{"tx_id": "negative", "' + field + b'": -5}'),
            Message(b"boolean", b'{"tx_id": "boolean", "' + field + b'": true}'),
            Message(b"text", b'{"tx_id": "text", "' + field + b'": "lots"}'),
        ]
    counter = 0
    while True:
        counter += 1
        sample = rng.choice(samples)
        # A unique key per message so each dead letter can be told apart.
        key = None if sample.key is None else sample.key + f"-{counter}".encode()
        yield Message(key, sample.value)


def mix(
    good: Iterator[Message], bad: Iterator[Message], bad_share: float, seed: int
) -> Iterator[Message]:
    """Interleave `bad` into `good` at about `bad_share` of all messages."""
    rng = random.Random(seed)
    for message in good:
        if bad_share > 0 and rng.random() < bad_share:
            yield next(bad)
        yield message


async def produce(
    bootstrap_servers: str,
    topic: str,
    messages: Iterator[Message],
    rate: float = 0.0,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send every message to `topic`, at `rate` per second (0: as fast as possible).

    Returns how many messages the broker acknowledged.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    sent = 0
    pending = []
    started = time.monotonic()
    try:
        for message in messages:
            pending.append(
                await producer.send(topic, value=message.value, key=message.key)
            )
            sent += 1
            if rate > 0:
                # Pace against the clock rather than sleeping a fixed gap, so
                # the rate holds even when sends take time.
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
            if on_sent is not None:
                on_sent(sent)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    logger.info("replayed messages=%d topic=%s", sent, topic)
    return sent

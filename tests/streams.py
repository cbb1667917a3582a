"""Helpers for tests that drive the scorer through the embedded broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from txrisk.broker import EmbeddedBroker, TopicPlan, create_topics

PARTITIONS = 4


@dataclass(frozen=True)
class Topics:
    """A fresh set of scorer topics, so tests never see each other's messages."""

    input: str
    output: str
    dead_letter: str
    control: str
    group: str

    @classmethod
    def fresh(cls, broker: EmbeddedBroker) -> Topics:
        tag = uuid.uuid4().hex[:8]
        topics = cls(
            input=f"tx-{tag}",
            output=f"scores-{tag}",
            dead_letter=f"dlq-{tag}",
            control=f"control-{tag}",
            group=f"group-{tag}",
        )
        plans = [
            TopicPlan(topics.input, PARTITIONS),
            TopicPlan(topics.output, PARTITIONS),
            TopicPlan(topics.dead_letter, PARTITIONS),
            TopicPlan(topics.control, 1, {"cleanup.policy": "compact"}),
        ]
        asyncio.run(create_topics(broker.bootstrap_servers, plans))
        return topics

    def env(self, broker: EmbeddedBroker, registry: Path) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "TXRISK_MODEL_DIR": str(registry),
            "TXRISK_INPUT_TOPIC": self.input,
            "TXRISK_OUTPUT_TOPIC": self.output,
            "TXRISK_DEAD_LETTER_TOPIC": self.dead_letter,
            "TXRISK_CONTROL_TOPIC": self.control,
            "TXRISK_GROUP_ID": self.group,
            "TXRISK_LOG_LEVEL": "INFO",
            # Each scorer on its own free loopback port: tests run several.
            "TXRISK_HTTP_PORT": "0",
            "TXRISK_HTTP_HOST": "127.0.0.1",
        }


def start_scorer(
    broker: EmbeddedBroker,
    registry: Path,
    topics: Topics,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m scorer run` as a real process, its output appended to `log`."""
    env = {**topics.env(broker, registry), **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "scorer", "run"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def send(
    broker: EmbeddedBroker,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
) -> int:
    async def _send() -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, linger_ms=5
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=key, value=value)
                for key, value in messages
            ]
            await asyncio.gather(*futures)
            return len(futures)
        finally:
            await producer.stop()

    return asyncio.run(_send())


def read_all(
    broker: EmbeddedBroker,
    topics: Sequence[str],
    expected: int,
    timeout_s: float = 120.0,
    settle_s: float = 0.0,
) -> dict[str, list[dict]]:
    """Every message on `topics` from the beginning, once `expected` have arrived.

    `settle_s` keeps reading that long after reaching `expected`, to catch
    messages that should not be there (duplicates).
    """

    async def _read() -> dict[str, list[dict]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        found: dict[str, list[dict]] = {topic: [] for topic in topics}
        try:
            partitions = [
                TopicPartition(t, p) for t in topics for p in range(PARTITIONS)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            deadline = time.monotonic() + timeout_s
            reached_at: float | None = None
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
                for tp, records in batch.items():
                    for record in records:
                        document = orjson.loads(record.value)
                        document["_key"] = record.key
                        document["_partition"] = tp.partition
                        found[tp.topic].append(document)
                total = sum(len(v) for v in found.values())
                if total >= expected and reached_at is None:
                    reached_at = time.monotonic()
                if reached_at is not None and time.monotonic() - reached_at >= settle_s:
                    return found
            return found
        finally:
            await consumer.stop()

    return asyncio.run(_read())


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def gateway_events(
    tmp_path: Path, rows: int, seed: int
) -> list[tuple[bytes | None, bytes | None]]:
    """Good gateway events as (key, value), keyed by their unique tx id."""
    from scorer.replay import file_messages
    from trainer.generate import generate, write_table
    from txrisk.spec import load_spec

    path = tmp_path / f"events-{seed}-{rows}.parquet"
    write_table(generate(rows, seed=seed), path)
    return [(m.key, m.value) for m in file_messages(path, load_spec("gateway"), None)]

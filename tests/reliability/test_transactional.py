"""Opt-in transactional delivery (TXRISK_KAFKA_TRANSACTIONAL).

The embedded broker has no transactions, so what runs here is: the scorer
refuses to start on it with one clear line, and the batch cycle drives a
producer through begin -> send -> offsets -> commit (abort and retry on a
failure) without ever committing through the consumer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from streams import Topics, gateway_events

from scorer.models import ModelManager
from scorer.service import ScorerService
from scorer.settings import ScorerSettings
from txrisk.broker import EmbeddedBroker

Encoded = tuple[bytes | None, bytes, int | None]


@pytest.mark.broker
def test_embedded_broker_refuses_transactional_mode_in_one_line(
    broker: EmbeddedBroker, registry: Path
) -> None:
    topics = Topics.fresh(broker)
    env = {**topics.env(broker, registry), "TXRISK_KAFKA_TRANSACTIONAL": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "scorer", "run"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "transactional" in errors[0], stderr
    assert "Apache Kafka" in errors[0] and "Traceback" not in stderr


class FakeProducer:
    """Records the transactional calls; `failing_sends` sends fail first."""

    def __init__(self, failing_sends: int = 0) -> None:
        self.calls: list[Any] = []
        self.failing_sends = failing_sends

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        future = asyncio.get_running_loop().create_future()
        if self.failing_sends:
            self.failing_sends -= 1
            future.set_exception(KafkaTimeoutError("injected"))
        else:
            future.set_result(None)
        self.calls.append(f"send {topic}")
        return future

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self.calls.append(("offsets", {tp.partition: o for tp, o in offsets.items()}))

    async def commit_transaction(self) -> None:
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


class FakePublisher:
    def __init__(self, producer: FakeProducer) -> None:
        self._producer = producer

    async def publish(
        self, results: Sequence[Encoded], dead_letters: Sequence[Encoded], *_: Any
    ) -> None:
        pending = [
            await self._producer.send("out", value=v, key=k) for k, v, *_ in results
        ]
        pending += [
            await self._producer.send("dlq", value=v, key=k)
            for k, v, *_ in dead_letters
        ]
        await asyncio.gather(*pending)


class FakeConsumer:
    def __init__(self, partitions: set[TopicPartition]) -> None:
        self.partitions, self.commits = partitions, []

    def assignment(self) -> set[TopicPartition]:
        return self.partitions

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


def records(messages: list[tuple[bytes | None, bytes]], partition: int) -> list:
    return [
        ConsumerRecord("tx", partition, 100 + i, 0, 0, key, value, None, 0, 0, ())
        for i, (key, value) in enumerate(messages)
    ]


@pytest.mark.parametrize("failing_sends", [0, 1])
def test_batch_and_offsets_go_in_one_transaction(
    registry: Path, tmp_path: Path, failing_sends: int
) -> None:
    events = gateway_events(tmp_path, 400, seed=77)[:20]
    batch = {
        TopicPartition("tx", 0): records([*events[:10], (b"bad", b"{")], 0),
        TopicPartition("tx", 1): records(events[10:], 1),
    }
    settings = ScorerSettings(
        model_dir=registry, kafka_transactional=True, publish_backoff_ms=0
    )
    models = ModelManager(registry)
    models.load_initial()
    service = ScorerService(settings, models)
    producer = FakeProducer(failing_sends)
    consumer = FakeConsumer(set(batch))
    service._producer = producer  # type: ignore[assignment]
    service._consumer = consumer  # type: ignore[assignment]
    service._publisher = FakePublisher(producer)  # type: ignore[assignment]
    service._set_ready(assigned=True)

    async def cycle() -> None:
        try:
            await service.process(batch)
        finally:
            service._executor.shutdown()

    asyncio.run(cycle())
    models.close()

    sends = ["send out"] * 20 + ["send dlq"]
    attempt = ["begin", *sends, ("offsets", {0: 111, 1: 110}), "commit"]
    failed = ["begin", *sends, "abort"]
    assert producer.calls == (failed if failing_sends else []) + attempt
    # Offsets travel inside the transaction, never through the consumer.
    assert consumer.commits == []

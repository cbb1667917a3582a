"""Producer errors: retried with backoff, never committed past, and after the
limit a loud stop; the real broker for everything but the injected failures."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from reliability.ledger import (
    Tail,
    in_process,
    send_recorded,
    settings_for,
    tally,
)
from streams import PARTITIONS, Topics, gateway_events

import scorer.cli
import scorer.publish
from scorer.service import PublishFailed
from txrisk.broker import EmbeddedBroker

pytestmark = pytest.mark.broker

EVENTS = 1_000
# Fast retries so the scenario takes seconds: 3 attempts, 50 ms then 100 ms.
RETRY = {"publish_attempts": 3, "publish_backoff_ms": 50, "http_port": 0}


class FlakyPublish:
    """Publisher.publish that fails `failures` times (all of them if None)."""

    def __init__(self, failures: int | None, commits: list[str]) -> None:
        self.failures, self.calls, self._commits = failures, 0, commits
        self._real = scorer.publish.Publisher.publish

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        flaky = self

        async def publish(publisher: Any, *args: Any) -> None:
            flaky.calls += 1
            if flaky.failures is None or flaky.calls <= flaky.failures:
                flaky._commits.append("publish failed")
                raise KafkaTimeoutError("injected: output topic unavailable")
            await flaky._real(publisher, *args)
            flaky._commits.append("published")

        monkeypatch.setattr(scorer.publish.Publisher, "publish", publish)


def record_commits(monkeypatch: pytest.MonkeyPatch, log: list[str]) -> None:
    real = scorer.service.ScorerService._commit

    async def commit(service: Any, offsets: Any) -> None:
        log.append("commit")
        await real(service, offsets)

    monkeypatch.setattr(scorer.service.ScorerService, "_commit", commit)


def committed(broker: EmbeddedBroker, topics: Topics) -> dict[int, int | None]:
    async def _read() -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            group_id=topics.group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            return {
                p: await consumer.committed(TopicPartition(topics.input, p))
                for p in range(PARTITIONS)
            }
        finally:
            await consumer.stop()

    return asyncio.run(_read())


def test_transient_publish_errors_are_retried_before_any_commit(
    broker: EmbeddedBroker,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scorer.service")
    steps: list[str] = []
    FlakyPublish(failures=2, commits=steps).install(monkeypatch)
    record_commits(monkeypatch, steps)
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, EVENTS, seed=75)
    send_recorded(broker, topics.input, events)

    with Tail(broker, [topics.output, topics.dead_letter]) as tail:
        with in_process(settings_for(broker, registry, topics, **RETRY)):
            assert tail.wait_for(EVENTS, timeout_s=90), caplog.text[-3000:]
            tail.settle(quiet_s=2)
        results = tail.snapshot(topics.output)
        letters = tail.snapshot(topics.dead_letter)

    # Two failed attempts, then success; the first commit only after it.
    assert steps[:4] == ["publish failed", "publish failed", "published", "commit"]
    assert "publish failed attempt=1/3" in caplog.text
    assert "publish failed attempt=2/3" in caplog.text
    counted = tally(
        "producer errors, retried", (k.decode() for k, _ in events), results, letters
    )
    counted.check()


def test_publish_failing_for_good_stops_loudly_and_commits_nothing(
    broker: EmbeddedBroker,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scorer")
    steps: list[str] = []
    flaky = FlakyPublish(failures=None, commits=steps)
    flaky.install(monkeypatch)
    record_commits(monkeypatch, steps)
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, EVENTS, seed=76)
    send_recorded(broker, topics.input, events)
    settings = settings_for(broker, registry, topics, **RETRY)

    # The command's own serve loop: it must end with PublishFailed (one error
    # line and exit 2 from the entry point), not a traceback of a task group.
    with pytest.raises(PublishFailed, match="after 3 attempts"):
        asyncio.run(asyncio.wait_for(scorer.cli._serve(settings), timeout=90))
    assert flaky.calls == 3 and "commit" not in steps
    assert "stopping without committing" in caplog.text
    assert committed(broker, topics) == dict.fromkeys(range(PARTITIONS))

    # The output comes back: a restarted scorer publishes everything.
    monkeypatch.undo()
    with Tail(broker, [topics.output, topics.dead_letter]) as tail:
        with in_process(settings):
            assert tail.wait_for(EVENTS, timeout_s=90)
            tail.settle(quiet_s=2)
        results = tail.snapshot(topics.output)
        letters = tail.snapshot(topics.dead_letter)
    counted = tally(
        "producer errors past the limit, then restart",
        (k.decode() for k, _ in events),
        results,
        letters,
    )
    counted.check()

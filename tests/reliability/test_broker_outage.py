"""The broker goes away for 10 s while the scorer runs, and comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from http_client import get, wait_for_port
from reliability.ledger import (
    Tail,
    cpu_seconds,
    send_recorded,
    tally,
)
from streams import PARTITIONS, Topics, gateway_events, start_scorer, stop

from txrisk.broker import EmbeddedBroker, TopicPlan, create_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OUTAGE_S = 10.0
EVENTS_EACH_SIDE = 1_000
# Readiness must notice the outage within a broker check (2 s) plus its
# timeout; ten seconds allows a loaded CI machine.
NOTICE_S = 10.0
# The scorer's share of one core while it waits for the broker: its own checks
# back off to one every 2 s; the Kafka client's reconnect loops stay light.
# A spinning loop would use a whole core.
MAX_CPU_SHARE = 0.25


def recreate_topics(broker: EmbeddedBroker, topics: Topics) -> None:
    """The embedded broker starts empty after a restart (memory storage);
    Apache Kafka would still have the topics, messages and offsets."""
    plans = [
        TopicPlan(topics.input, PARTITIONS),
        TopicPlan(topics.output, PARTITIONS),
        TopicPlan(topics.dead_letter, PARTITIONS),
        TopicPlan(topics.control, 1, {"cleanup.policy": "compact"}),
    ]
    asyncio.run(create_topics(broker.bootstrap_servers, plans))


def readiness(base: str) -> int:
    try:
        return get(f"{base}/readyz")[0]
    except OSError:
        return -1


def wait_readiness(base: str, status: int, timeout_s: float) -> float:
    """Seconds until /readyz answers `status`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if readiness(base) == status:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"/readyz never answered {status} within {timeout_s}s")


def test_broker_restart_pauses_then_resumes_scoring(
    registry: Path, tmp_path: Path
) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log").start()
    try:
        run_outage(broker, registry, tmp_path)
    finally:
        broker.stop()


def run_outage(broker: EmbeddedBroker, registry: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker)
    log = tmp_path / "scorer.log"
    events = gateway_events(tmp_path, 2 * EVENTS_EACH_SIDE, seed=72)
    before, after = events[:EVENTS_EACH_SIDE], events[EVENTS_EACH_SIDE:]

    scorer = start_scorer(broker, registry, topics, log)
    try:
        base = f"http://127.0.0.1:{wait_for_port(log, scorer)}"
        wait_readiness(base, 200, 60)

        with Tail(broker, [topics.output, topics.dead_letter]) as tail:
            send_recorded(broker, topics.input, before)
            assert tail.wait_for(len(before), timeout_s=60), log.read_text()[-3000:]
            tail.settle(quiet_s=1)
            first = tally(
                "broker outage, before",
                (k.decode() for k, _ in before),
                tail.snapshot(topics.output),
                tail.snapshot(topics.dead_letter),
            )

        broker.stop()
        down_at = time.monotonic()
        cpu_at_stop = cpu_seconds(scorer.pid)
        noticed_s = wait_readiness(base, 503, NOTICE_S)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        cpu_share = (cpu_seconds(scorer.pid) - cpu_at_stop) / (
            time.monotonic() - down_at
        )
        assert scorer.poll() is None, log.read_text()[-3000:]

        broker.start()  # the same port
        recreate_topics(broker, topics)
        with Tail(broker, [topics.output, topics.dead_letter]) as tail:
            send_recorded(broker, topics.input, after)
            # A rejoin after the restart, then 1,000 events.
            assert tail.wait_for(len(after), timeout_s=90), log.read_text()[-3000:]
            recovered_s = wait_readiness(base, 200, 30)
            tail.settle(quiet_s=2)
            second = tally(
                "broker outage, after restart",
                (k.decode() for k, _ in after),
                tail.snapshot(topics.output),
                tail.snapshot(topics.dead_letter),
            )
    finally:
        assert stop(scorer) == 0, log.read_text()[-3000:]

    text = log.read_text()
    print(
        f"outage: readiness 503 after {noticed_s:.1f}s, scorer cpu {cpu_share:.0%} "
        f"of a core while down, ready again {recovered_s:.1f}s after the results",
        flush=True,
    )
    first.check()
    second.check()
    assert "broker unreachable" in text and "broker reachable again" in text, text
    assert "Traceback" not in text, text
    assert cpu_share < MAX_CPU_SHARE, f"the scorer spun at {cpu_share:.0%} of a core"

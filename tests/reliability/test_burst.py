"""A burst of ten times the steady rate for 30 s: memory stays bounded, the
lag drains afterwards, and no event is lost."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from reliability.ledger import Tail, rss_mb, tally, wait_for_log
from streams import Topics, gateway_events, start_scorer, stop

from txrisk.broker import EmbeddedBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

STEADY_RATE = 100  # events/s: a modest gateway
BURST_RATE = 10 * STEADY_RATE
# (rate, seconds): steady, the 30 s burst, steady again.
PHASES = [(STEADY_RATE, 3.0), (BURST_RATE, 30.0), (STEADY_RATE, 3.0)]
# Growth of the scorer's resident memory from before the burst to its peak.
# The backlog stays in the broker: the consumer prefetches at most about 1 MB
# a partition and the scorer holds one batch of 500, so growth is the
# allocator's working set, not the backlog. 150 MB is far under what holding
# 30,000 events and their results would take with Python objects.
MAX_GROWTH_MB = 150.0


class PacedLoad:
    """Sends events at the phases' rates from a thread, 10 ticks a second."""

    def __init__(self, broker: EmbeddedBroker, topic: str, events: list) -> None:
        self.sent = 0
        self.burst_ended_at: float | None = None
        self._args = (broker, topic, events)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), daemon=True
        )

    async def _run(self) -> None:
        broker, topic, events = self._args
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, linger_ms=5
        )
        await producer.start()
        try:
            for number, (rate, seconds) in enumerate(PHASES):
                start = time.monotonic()
                due = 0
                while (elapsed := time.monotonic() - start) < seconds:
                    due = int(rate * elapsed)
                    phase_sent = self.sent - sum(int(r * s) for r, s in PHASES[:number])
                    chunk = events[self.sent : self.sent + max(0, due - phase_sent)]
                    futures = [
                        await producer.send(topic, key=k, value=v) for k, v in chunk
                    ]
                    await asyncio.gather(*futures)
                    self.sent += len(chunk)
                    await asyncio.sleep(0.1)
                # Top up to the phase's exact count before the next one.
                target = sum(int(r * s) for r, s in PHASES[: number + 1])
                chunk = events[self.sent : target]
                await asyncio.gather(
                    *[await producer.send(topic, key=k, value=v) for k, v in chunk]
                )
                self.sent += len(chunk)
                if rate == BURST_RATE:
                    self.burst_ended_at = time.monotonic()
        finally:
            await producer.stop()

    def start(self) -> PacedLoad:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def test_burst_keeps_memory_bounded_and_drains(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    total = sum(int(rate * seconds) for rate, seconds in PHASES)
    events = gateway_events(tmp_path, total, seed=80)
    topics = Topics.fresh(broker)
    log = tmp_path / "scorer.log"
    scorer = start_scorer(broker, registry, topics, log)
    rss: list[tuple[float, float]] = []
    lags: list[int] = []
    try:
        wait_for_log(log, "partitions assigned", 60, scorer)
        with Tail(broker, [topics.output, topics.dead_letter]) as tail:
            load = PacedLoad(broker, topics.input, events).start()
            while load.running:
                rss.append((time.monotonic(), rss_mb(scorer.pid)))
                lags.append(load.sent - tail.count())
                time.sleep(0.5)
            assert load.sent == total
            assert load.burst_ended_at is not None
            sent_all_at = time.monotonic()
            # Whatever backlog the burst left drains at the scorer's pace
            # (thousands a second); 120 s only guards a starved CI box.
            assert tail.wait_for(total, timeout_s=120), log.read_text()[-3000:]
            drained_s = time.monotonic() - sent_all_at
            tail.settle(quiet_s=2)
            results = tail.snapshot(topics.output)
            letters = tail.snapshot(topics.dead_letter)
    finally:
        assert stop(scorer) == 0, log.read_text()[-3000:]

    steady = [mb for _, mb in rss[: int(PHASES[0][1] / 0.5)]]
    baseline, peak = max(steady), max(mb for _, mb in rss)
    print(
        f"burst: rss before {baseline:.0f} MB, peak {peak:.0f} MB, max lag {max(lags)} "
        f"events, all results {drained_s:.1f}s after the last event was sent",
        flush=True,
    )
    assert peak - baseline < MAX_GROWTH_MB
    counted = tally(
        f"burst 10x for 30 s ({total} events)",
        (k.decode() for k, _ in events),
        results,
        letters,
    )
    counted.check()

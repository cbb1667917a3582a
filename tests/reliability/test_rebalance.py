"""A second scorer joins the group under load and leaves again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from reliability.ledger import Tail, send_recorded, tally, wait_for_log
from streams import Topics, gateway_events, start_scorer, stop

from txrisk.broker import EmbeddedBroker

pytestmark = pytest.mark.broker

EVENTS = 8_000
# 300 events every 0.5 s: about 600/s, well under what one scorer takes, so
# the test measures hand-overs rather than a backlog.
CHUNK, PAUSE_S = 300, 0.5


class Load:
    """Sends the events in chunks from a thread, up to what `allow` permits."""

    def __init__(self, broker: EmbeddedBroker, topic: str, events: list) -> None:
        self.sent = 0
        self._allowed = 0
        self._thread = threading.Thread(
            target=self._run, args=(broker, topic, events), daemon=True
        )

    def _run(self, broker: EmbeddedBroker, topic: str, events: list) -> None:
        while self.sent < len(events):
            if self.sent >= self._allowed:
                time.sleep(0.05)
                continue
            chunk = events[self.sent : min(self.sent + CHUNK, self._allowed)]
            send_recorded(broker, topic, chunk)
            self.sent += len(chunk)
            time.sleep(PAUSE_S)

    def allow(self, count: int) -> Load:
        self._allowed = count
        if not self._thread.is_alive() and self.sent < count:
            self._thread.start()
        return self

    def wait_sent(self, count: int) -> None:
        while self.sent < count and self._thread.is_alive():
            time.sleep(0.05)

    def join(self) -> None:
        self._thread.join()


def test_member_joins_and_leaves_under_load(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, EVENTS, seed=73)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = start_scorer(broker, registry, topics, logs[0])
    second = None
    try:
        wait_for_log(logs[0], "partitions assigned", 60, first)
        with Tail(broker, [topics.output, topics.dead_letter]) as tail:
            load = Load(broker, topics.input, events).allow(EVENTS // 4)
            load.wait_sent(EVENTS // 4)
            # The join, under load: the first scorer gives up half its
            # partitions with the batch in hand committed.
            load.allow(EVENTS // 2)
            second = start_scorer(broker, registry, topics, logs[1])
            wait_for_log(logs[1], "partitions assigned", 60, second)
            # Both score a quarter of the events between them.
            load.allow(EVENTS * 3 // 4)
            load.wait_sent(EVENTS * 3 // 4)
            assert tail.wait_for(EVENTS * 3 // 4, timeout_s=60)
            # The leave, under load: SIGTERM finishes the batch in hand,
            # commits and leaves; the first scorer takes the partitions back.
            load.allow(EVENTS)
            assert stop(second) == 0, logs[1].read_text()[-3000:]
            load.join()
            assert tail.wait_for(EVENTS, timeout_s=120), logs[0].read_text()[-3000:]
            tail.settle(quiet_s=3)
            results = tail.snapshot(topics.output)
            letters = tail.snapshot(topics.dead_letter)
    finally:
        assert stop(first) == 0, logs[0].read_text()[-3000:]
        if second is not None:
            stop(second)

    texts = [log.read_text() for log in logs]
    for text in texts:
        assert "Traceback" not in text, text[-3000:]
    # Both members took part: the second scored some of the load.
    assert "partitions revoked" in texts[0] and "partitions assigned" in texts[1]
    assert "scorer stopped consumed=0" not in texts[1], texts[1][-2000:]
    commit_failures = sum(t.count("commit failed") for t in texts)
    print(f"rebalance: commit failures handled={commit_failures}", flush=True)

    counted = tally(
        "second scorer joins and leaves (8k events)",
        (k.decode() for k, _ in events),
        results,
        letters,
    )
    # The batch in hand is committed before its partitions move, so neither
    # member publishes a revoked batch the other publishes too.
    counted.check(max_duplicates=0)

"""SIGKILL at random points of a 50,000-event run: after restarts, every event
has exactly its result, and the only duplicates are uncommitted batches."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from reliability.ledger import Tail, send_recorded, tally, wait_for_log
from streams import Topics, gateway_events, start_scorer, stop

from txrisk.broker import EmbeddedBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENTS = 50_000
KILLS = 3
BATCH_SIZE = 500
# A killed member never says goodbye; the group waits a session timeout for it
# before handing its partitions to the restarted scorer. 3 s (instead of 10)
# keeps three kills short; heartbeats still go every second.
ENV = {"TXRISK_SESSION_TIMEOUT_MS": "3000", "TXRISK_BATCH_SIZE": str(BATCH_SIZE)}


def test_sigkill_at_random_points_loses_nothing(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, EVENTS, seed=71)
    log = tmp_path / "scorer.log"
    send_recorded(broker, topics.input, events)
    rng = random.Random(71)

    with Tail(broker, [topics.output, topics.dead_letter]) as tail:
        for kill in range(KILLS):
            scorer = start_scorer(broker, registry, topics, log, ENV)
            # Kill somewhere in the next stretch of output: mid-batch, between
            # publish and commit, or while scoring, whichever it hits.
            target = tail.count() + rng.randint(2_000, 9_000)
            # Each stretch is a few seconds of scoring plus a rejoin; 180 s
            # only guards a starved CI box.
            assert tail.wait_for(target, timeout_s=180), log.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.4))
            assert scorer.poll() is None, log.read_text()[-3000:]
            scorer.send_signal(signal.SIGKILL)
            scorer.wait()
            print(f"kill {kill + 1} after {tail.count()} outputs", flush=True)

        scorer = start_scorer(broker, registry, topics, log, ENV)
        try:
            wait_for_log(log, "scorer started", 60, scorer)
            # 50,000 events at a few thousand a second, after a rejoin.
            assert tail.wait_for(EVENTS, timeout_s=240), log.read_text()[-3000:]
            tail.settle(quiet_s=3)
        finally:
            assert stop(scorer) == 0, log.read_text()[-3000:]
        results = tail.snapshot(topics.output)
        letters = tail.snapshot(topics.dead_letter)

    counted = tally(
        "sigkill x3 (50k events)", (k.decode() for k, _ in events), results, letters
    )
    # At most the batch in hand of each killed scorer is published again.
    counted.check(max_duplicates=KILLS * BATCH_SIZE)
    assert counted.results >= EVENTS and counted.dead_letters == 0

"""A batch that scores longer than the consumer's poll interval."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from reliability.ledger import (
    Tail,
    in_process,
    send_recorded,
    settings_for,
    tally,
)
from streams import Topics, gateway_events

import scorer.service
from txrisk.broker import EmbeddedBroker

pytestmark = pytest.mark.broker

EVENTS = 1_000
# 6 ms an event: a full batch of 500 takes 3 s, over the 2 s poll interval;
# 250 take 1.5 s (still over half of it), 125 take 0.75 s, which fits.
DELAY_PER_EVENT_S = 0.006
MAX_POLL_INTERVAL_MS = 2_000


def test_slow_batches_shrink_instead_of_looping(
    broker: EmbeddedBroker,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scorer.service")
    real = scorer.service._decode_and_score
    slow_batches: list[int] = []

    def slow(bundle: Any, shadow: Any, records: Any, *args: Any) -> Any:
        slow_batches.append(len(records))
        time.sleep(DELAY_PER_EVENT_S * len(records))
        return real(bundle, shadow, records, *args)

    monkeypatch.setattr(scorer.service, "_decode_and_score", slow)
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, EVENTS, seed=74)
    send_recorded(broker, topics.input, events)
    settings = settings_for(
        broker, registry, topics, max_poll_interval_ms=MAX_POLL_INTERVAL_MS
    )

    started = time.monotonic()
    with Tail(broker, [topics.output, topics.dead_letter]) as tail:
        with in_process(settings) as running:
            # 1,000 events at 6 ms plus at most a few rejoins: well under 2 min.
            assert tail.wait_for(EVENTS, timeout_s=120), caplog.text[-3000:]
            tail.settle(quiet_s=2)
            assert running.service is not None
            limit = running.service._batch_limit
        took_s = time.monotonic() - started
        results = tail.snapshot(topics.output)
        letters = tail.snapshot(topics.dead_letter)

    assigned = caplog.text.count("partitions assigned")
    print(
        f"slow batches: took {took_s:.0f}s, batch sizes {slow_batches[:8]}..., "
        f"limit now {limit}, group joins {assigned}",
        flush=True,
    )
    assert "batch size lowered" in caplog.text
    assert limit < settings.batch_size
    # The scorer rescored the oversized batch at most once before it fit: it
    # joined the group at most twice, and scored about EVENTS events in all.
    assert assigned <= 2, caplog.text[-3000:]
    assert sum(slow_batches) <= EVENTS + settings.batch_size
    counted = tally(
        "slow scoring > poll interval",
        (k.decode() for k, _ in events),
        results,
        letters,
    )
    counted.check(max_duplicates=settings.batch_size)

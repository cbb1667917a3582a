"""HTTP beside the stream, end to end: a real broker and a real scorer process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from deploy_files import dockerfile_healthcheck
from http_client import get, metric_values, post, wait_for_port, wait_until_ready
from streams import Topics, gateway_events, read_all, send, start_scorer, stop

from txrisk.broker import EmbeddedBroker

pytestmark = pytest.mark.broker

BAD = [
    (b"bad-json", b'{"tx_id": '),
    (b"bad-neg", b'{"tx_id": "neg", "amount_usd": -1}'),
    (b"bad-noid", b'{"amount_usd": 5}'),
    (b"bad-empty", b""),
]


def test_ready_metrics_and_predict_match_the_stream(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    good = gateway_events(tmp_path, 1_000, seed=41)
    log = tmp_path / "scorer.log"
    scorer = start_scorer(broker, registry, topics, log, {"TXRISK_LOG_FORMAT": "json"})
    try:
        port = wait_for_port(log, scorer)
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/healthz")[0] == 200
        ready = wait_until_ready(base, scorer)
        assert ready == {"status": "ready", "model_version": "v1"}

        send(broker, topics.input, [*good, *BAD])
        sent = len(good) + len(BAD)
        found = read_all(broker, [topics.output, topics.dead_letter], sent)
        values = _wait_for_counter(base, "txrisk_events_consumed_total", sent)

        results = {r["tx_id"]: r for r in found[topics.output]}
        flagged = sum(1 for r in results.values() if r["is_flagged"])
        assert len(results) == len(good)
        assert values["txrisk_events_consumed_total"] == sent
        assert values["txrisk_events_scored_total"] == len(good)
        assert values["txrisk_events_flagged_total"] == flagged
        assert values['txrisk_dead_letters_total{reason="not_json"}'] == 1
        assert values['txrisk_dead_letters_total{reason="invalid_field"}'] == 1
        assert values['txrisk_dead_letters_total{reason="missing_tx_id"}'] == 1
        assert values['txrisk_dead_letters_total{reason="empty"}'] == 1
        assert values["txrisk_batch_size_events_sum"] == sent
        assert values["txrisk_end_to_end_latency_seconds_count"] == sent
        assert values["txrisk_fraud_probability_ratio_count"] == len(good)
        assert values["txrisk_explanation_seconds_count"] >= 1
        assert values["txrisk_in_flight_events"] == 0
        assert any(
            k.startswith("txrisk_model_info{") and 'version="v1"' in k for k in values
        )
        lags = [k for k in values if k.startswith("txrisk_consumer_lag_messages{")]
        assert lags and all(values[k] == 0 for k in lags)

        _check_predict(base, good, results)
        _check_model(base)
        _check_healthcheck(port)
    finally:
        assert stop(scorer) == 0, log.read_text()

    lines = log.read_text().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is JSON
    messages = [r["message"] for r in records]
    assert any(m.startswith("scorer starting settings=") for m in messages)
    listening = f"http listening host=127.0.0.1 port={port}"
    assert any(m.startswith(listening) for m in messages)
    assert any(m.startswith("partitions assigned") for m in messages)
    assert any(m.startswith("dead letters count=") for m in messages)
    assert any(m.startswith(f"scorer stopped consumed={sent} ") for m in messages)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)


def test_http_stays_responsive_while_batches_score(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, 10_000, seed=42)
    log = tmp_path / "scorer.log"
    scorer = start_scorer(broker, registry, topics, log)
    try:
        port = wait_for_port(log, scorer)
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, scorer)

        sender = threading.Thread(target=send, args=(broker, topics.input, events))
        sender.start()
        waits = []
        scored = 0.0
        deadline = time.monotonic() + 120
        while scored < len(events) and time.monotonic() < deadline:
            started = time.monotonic()
            assert get(f"{base}/healthz")[0] == 200
            waits.append(time.monotonic() - started)
            scored = metric_values(base).get("txrisk_events_scored_total", 0.0)
            time.sleep(0.05)
        sender.join()
    finally:
        assert stop(scorer) == 0, log.read_text()

    assert scored == len(events)
    # A batch of 500 scores in tens of milliseconds; a loop blocked by scoring
    # would show waits of whole batches. One second leaves room for a slow CI.
    assert len(waits) >= 5 and max(waits) < 1.0, waits


def _check_predict(base: str, good: list, results: dict[str, dict]) -> None:
    key, value = good[7]
    status, body = post(f"{base}/predict", value)
    assert status == 200, body
    single = orjson.loads(body)
    stream = results[key.decode()]
    single.pop("scored_at"), stream.pop("scored_at")
    stream.pop("_key"), stream.pop("_partition")
    assert single == stream

    documents = [orjson.loads(v) for _, v in good[10:13]]
    status, body = post(f"{base}/predict", orjson.dumps(documents))
    assert status == 200, body
    listed = orjson.loads(body)
    assert [r["tx_id"] for r in listed] == [d["tx_id"] for d in documents]
    for result in listed:
        expected = dict(results[result["tx_id"]])
        for field in ("scored_at", "_key", "_partition"):
            expected.pop(field, None)
        result.pop("scored_at")
        assert result == expected

    bad = {"tx_id": "x", "amount_usd": -3, "tx_count_24h": True}
    status, body = post(f"{base}/predict", orjson.dumps(bad))
    assert status == 422
    locs = {tuple(e["loc"]) for e in orjson.loads(body)["detail"]}
    assert locs == {("body", "amount_usd"), ("body", "tx_count_24h")}

    status, body = post(f"{base}/predict", orjson.dumps([documents[0], {"chain": 1}]))
    assert status == 422
    assert [e["loc"] for e in orjson.loads(body)["detail"]] == [["body", 1, "tx_id"]]

    status, body = post(f"{base}/predict", b"{not json")
    assert status == 422 and orjson.loads(body)["detail"][0]["type"] == "json_invalid"


def _check_model(base: str) -> None:
    status, body = get(f"{base}/model")
    assert status == 200
    model = orjson.loads(body)
    assert model["version"] == "v1"
    assert model["metadata"]["version"] == "v1"
    assert "canary" not in model["metadata"] and "signature" not in model["metadata"]


def _check_healthcheck(port: int) -> None:
    """The Dockerfile's HEALTHCHECK command, run here against this scorer."""
    command = dockerfile_healthcheck()
    assert command[0] == "python"
    done = subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "TXRISK_HTTP_PORT": str(port)},
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def _wait_for_counter(base: str, name: str, expected: float) -> dict[str, float]:
    # The counters move after the commit, a moment after the results appear.
    deadline = time.monotonic() + 30
    values: dict[str, float] = {}
    while time.monotonic() < deadline:
        values = metric_values(base)
        if values.get(name, 0) >= expected:
            return values
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached {expected}: {values.get(name)}")

"""End to end through the embedded broker: events in, results and dead letters out."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streams import Topics, read_all, send, start_scorer, stop

from scorer.replay import Message, file_messages
from trainer.generate import generate, write_table
from txrisk.broker import EmbeddedBroker
from txrisk.bundle import BundleMetadata
from txrisk.contracts import DeadLetter, RiskResult
from txrisk.spec import load_spec

pytestmark = pytest.mark.broker


def gateway_messages(tmp_path: Path, rows: int, seed: int) -> list[Message]:
    path = tmp_path / f"events-{seed}.parquet"
    write_table(generate(rows, seed=seed), path)
    return list(file_messages(path, load_spec("gateway"), None))


BAD_MESSAGES: list[tuple[str, bytes | None, bytes, str]] = [
    # (error kind, key, value, a word the reason must contain)
    ("empty", b"k-empty", b"", "no value"),
    ("not_utf8", b"k-utf8", b'{"tx_id": "x", "chain": "\xff"}', "UTF-8"),
    ("not_json", b"k-json", b'{"tx_id": "x", ', "JSON"),
    ("not_json", b"k-nan", b'{"tx_id": "nan", "amount_usd": NaN}', "JSON"),
    ("not_object", b"k-list", b"[1, 2, 3]", "object"),
    ("missing_tx_id", b"k-noid", b'{"amount_usd": 5}', "tx_id"),
    ("missing_tx_id", b"k-nullid", b'{"tx_id": null, "amount_usd": 5}', "tx_id"),
    ("invalid_field", b"k-emptyid", b'{"tx_id": ""}', "tx_id"),
    ("invalid_field", b"k-longid", b'{"tx_id": "' + b"x" * 129 + b'"}', "tx_id"),
    ("invalid_field", b"k-neg", b'{"tx_id": "neg", "amount_usd": -1}', "amount_usd"),
    (
        "invalid_field",
        b"k-bool",
        b'{"tx_id": "b", "tx_count_24h": true}',
        "tx_count_24h",
    ),
    (
        "invalid_field",
        b"k-frac",
        b'{"tx_id": "f", "tx_count_24h": 2.5}',
        "tx_count_24h",
    ),
    ("invalid_field", b"k-big", b'{"tx_id": "g", "amount_usd": 1e300}', "amount_usd"),
    (
        "invalid_field",
        b"k-inf",
        b'{"tx_id": "i", "gas_price": "Infinity"}',
        "gas_price",
    ),
    (
        "invalid_field",
        b"k-text",
        b'{"tx_id": "t", "avg_tx_value": "lots"}',
        "avg_tx_value",
    ),
    ("invalid_field", b"k-chain", b'{"tx_id": "c", "chain": 42}', "chain"),
    (
        "invalid_field",
        b"k-long",
        b'{"tx_id": "l", "chain": "' + b"z" * 65 + b'"}',
        "chain",
    ),
    (
        "invalid_field",
        b"k-time",
        b'{"tx_id": "t2", "timestamp": "yesterday"}',
        "timestamp",
    ),
]


def test_every_event_gets_one_explained_result(
    broker: EmbeddedBroker, registry: Path, model_meta: BundleMetadata, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    messages = gateway_messages(tmp_path, 3_000, seed=21)
    scorer = start_scorer(broker, registry, topics, tmp_path / "scorer.log")
    try:
        send(broker, topics.input, [(m.key, m.value) for m in messages])
        found = read_all(
            broker, [topics.output, topics.dead_letter], len(messages), settle_s=2
        )
    finally:
        assert stop(scorer) == 0, (tmp_path / "scorer.log").read_text()

    results = found[topics.output]
    assert found[topics.dead_letter] == []
    assert sorted(r["tx_id"] for r in results) == sorted(
        m.key.decode() for m in messages
    )
    for result in results:
        assert result.pop("_key") == result["tx_id"].encode()
        result.pop("_partition")
        parsed = RiskResult.model_validate(result)
        assert parsed.model_version == "v1"
        assert parsed.threshold == model_meta.threshold
        assert parsed.is_flagged == (parsed.fraud_probability >= parsed.threshold)
        assert len(parsed.top_features) == 3
        assert {f.feature for f in parsed.top_features} <= set(model_meta.spec.columns)


def test_bad_messages_go_to_the_dead_letter_topic_beside_good_ones(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    good = gateway_messages(tmp_path, 200, seed=22)
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for index, message in enumerate(good):
        mixed.append((message.key, message.value))
        if index < len(BAD_MESSAGES):
            _, key, value, _ = BAD_MESSAGES[index]
            mixed.append((key, value))
    # No key and an empty value.
    mixed.append((None, b""))

    send(broker, topics.input, mixed)
    scorer = start_scorer(broker, registry, topics, tmp_path / "scorer.log")
    try:
        found = read_all(
            broker, [topics.output, topics.dead_letter], len(mixed), settle_s=2
        )
    finally:
        assert stop(scorer) == 0

    assert sorted(r["tx_id"] for r in found[topics.output]) == sorted(
        m.key.decode() for m in good
    )
    letters = {}
    for raw in found[topics.dead_letter]:
        raw.pop("_key"), raw.pop("_partition")
        letter = DeadLetter.model_validate(raw)
        assert letter.source.topic == topics.input
        letters[letter.key] = letter
    assert len(letters) == len(BAD_MESSAGES) + 1

    for kind, key, value, word in BAD_MESSAGES:
        letter = letters[key.decode()]
        assert letter.error == kind, (key, letter.reason)
        assert word.lower() in letter.reason.lower(), (key, letter.reason)
        if kind == "not_utf8":
            assert letter.payload_encoding == "base64"
        else:
            assert letter.payload == value.decode()
    assert letters[None].error == "empty"


def test_sigkill_mid_stream_loses_nothing(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    messages = gateway_messages(tmp_path, 20_000, seed=23)
    log = tmp_path / "scorer.log"
    send(broker, topics.input, [(m.key, m.value) for m in messages])

    scorer = start_scorer(broker, registry, topics, log)
    _wait_for_output(broker, topics, at_least=500, process=scorer)
    scorer.send_signal(signal.SIGKILL)
    scorer.wait()

    scorer = start_scorer(broker, registry, topics, log)
    try:
        found = read_all(broker, [topics.output], len(messages), settle_s=3)
    finally:
        assert stop(scorer) == 0

    results = found[topics.output]
    assert {r["tx_id"] for r in results} == {m.key.decode() for m in messages}
    # Duplicates come only from the batch in hand at the kill, and are the same
    # result apart from when they were scored.
    by_id: dict[str, dict] = {}
    for result in results:
        result.pop("scored_at"), result.pop("_partition")
        if result["tx_id"] in by_id:
            assert by_id[result["tx_id"]] == result
        by_id[result["tx_id"]] = result


def test_sigterm_commits_and_exits_zero(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    messages = gateway_messages(tmp_path, 1_000, seed=24)
    log = tmp_path / "scorer.log"
    send(broker, topics.input, [(m.key, m.value) for m in messages])

    scorer = start_scorer(broker, registry, topics, log)
    read_all(broker, [topics.output], len(messages))
    assert stop(scorer) == 0, log.read_text()
    assert "scorer stopped consumed=1000" in log.read_text(), log.read_text()

    # Everything was committed: a new scorer in the group has nothing to do.
    scorer = start_scorer(broker, registry, topics, log)
    time.sleep(8)
    assert stop(scorer) == 0, log.read_text()
    found = read_all(broker, [topics.output], len(messages), settle_s=1)
    assert len(found[topics.output]) == len(messages), log.read_text()


def test_missing_model_dir_is_one_clear_line(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    env = topics.env(broker, tmp_path / "no-such-registry")
    done = subprocess.run(
        [sys.executable, "-m", "scorer", "run"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.decode().splitlines() if "error" in line]
    assert len(errors) == 1 and "no-such-registry" in errors[0]
    assert "Traceback" not in done.stderr.decode()


def test_unreachable_broker_is_one_clear_line(registry: Path, tmp_path: Path) -> None:
    from txrisk.broker import free_port

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "TXRISK_MODEL_DIR": str(registry),
        # Any free port: the HTTP port is claimed before Kafka is tried.
        "TXRISK_HTTP_PORT": "0",
    }
    import os

    done = subprocess.run(
        [sys.executable, "-m", "scorer", "run"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2
    stderr = done.stderr.decode()
    assert "cannot reach Kafka" in stderr and "Traceback" not in stderr


def _wait_for_output(
    broker: EmbeddedBroker,
    topics: Topics,
    at_least: int,
    process: subprocess.Popen[bytes],
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "scorer exited early"
        found = read_all(broker, [topics.output], at_least, timeout_s=1)
        if len(found[topics.output]) >= at_least:
            return
    raise AssertionError("the scorer produced nothing")

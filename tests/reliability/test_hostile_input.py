"""Hostile input, property-based: the scorer never crashes, every message ends
as a result or a dead letter with a reason, and good events score the same
beside bad ones as alone."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from reliability.hostile import huge_messages, messages, number
from reliability.ledger import Tail, send_recorded, tally
from streams import Topics, start_scorer, stop

from scorer.decode import PAYLOAD_MAX_CHARS, decode
from scorer.service import _decode_and_score
from txrisk.broker import EmbeddedBroker
from txrisk.bundle import ModelBundle, load_bundle
from txrisk.contracts import DeadLetter, DeadLetterKind, SourceRef, event_model

KINDS = set(get_args(DeadLetterKind))
# Kafka's default largest message; a dead letter must always fit under it.
MAX_MESSAGE_BYTES = 1024 * 1024
# Generated messages are small, but a few carry 70,000-character strings or
# 1,500-deep nesting: Hypothesis' size and speed checks do not apply.
RELAXED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]
FUZZ_MESSAGES = 10_000


@pytest.fixture(scope="module")
def bundle(registry: Path) -> ModelBundle:
    return load_bundle(registry, "v1")


def as_records(batch: list[tuple[bytes | None, bytes | None]]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord("tx", 0, offset, 0, 0, key, value, None, 0, 0, ())
        for offset, (key, value) in enumerate(batch)
    ]


def numbered(drawn: list[tuple[bool, tuple[str, bytes | None]]], prefix: str) -> list:
    return [
        number(i, null, value, prefix) for i, (null, (_, value)) in enumerate(drawn)
    ]


def check_letter(letter: DeadLetter) -> None:
    assert letter.error in KINDS and letter.reason.strip(), letter
    # "failed unexpectedly" is decode's net for its own bugs: never expected.
    assert "unexpectedly" not in letter.reason, letter.reason
    assert letter.payload is None or len(letter.payload) <= PAYLOAD_MAX_CHARS
    assert len(letter.model_dump_json().encode()) < MAX_MESSAGE_BYTES


@settings(max_examples=1_000, deadline=None, suppress_health_check=RELAXED)
@given(messages)
def test_decode_never_raises_and_always_says_why(message: Any) -> None:
    key, value = number(0, message[0], message[1][1], "d")
    event_type = event_model(_SPEC_BUNDLE[0].spec) if _SPEC_BUNDLE else None
    assert event_type is not None
    decoded = decode(
        value, key, SourceRef(topic="tx", partition=0, offset=0), event_type
    )
    if isinstance(decoded, DeadLetter):
        check_letter(decoded)
    else:
        assert decoded.tx_id


# The bundle for the module-level property above, filled by an autouse fixture
# (Hypothesis' @given cannot take function-scoped fixtures).
_SPEC_BUNDLE: list[ModelBundle] = []


@pytest.fixture(autouse=True)
def _share_bundle(bundle: ModelBundle) -> None:
    if not _SPEC_BUNDLE:
        _SPEC_BUNDLE.append(bundle)


def stable(encoded: bytes) -> dict[str, Any]:
    document = orjson.loads(encoded)
    document.pop("scored_at")
    return document


@settings(max_examples=60, deadline=None, suppress_health_check=RELAXED)
@given(st.lists(messages, min_size=1, max_size=12))
def test_mixed_batch_scores_each_good_event_as_alone(drawn: list) -> None:
    bundle = _SPEC_BUNDLE[0]
    batch = numbered(drawn, "b")
    output = _decode_and_score(bundle, None, as_records(batch), 3)

    letters = {letter.source.offset for letter in output.dead_letters}
    assert len(output.encoded_results) + len(letters) == len(batch)
    for letter in output.dead_letters:
        check_letter(letter)
    good = [i for i in range(len(batch)) if i not in letters]
    for index, encoded in zip(good, output.encoded_results, strict=True):
        alone = _decode_and_score(bundle, None, as_records([batch[index]]), 3)
        assert stable(alone.encoded_results[0][1]) == stable(encoded[1])


def generate(count: int, prefix: str) -> list[tuple[bytes | None, bytes | None]]:
    """At least `count` messages drawn by Hypothesis, 50 an example."""
    drawn: list = []

    @settings(
        max_examples=count // 50 + 1,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        derandomize=True,  # the same messages in every CI run
        suppress_health_check=RELAXED,
    )
    @given(st.lists(messages, min_size=50, max_size=50))
    def collect(batch: list) -> None:
        drawn.extend(batch)

    while len(drawn) < count:
        collect()
    return numbered(drawn, prefix)


@pytest.mark.broker
@pytest.mark.slow
def test_fuzz_10k_messages_through_the_scorer(
    broker: EmbeddedBroker, registry: Path, bundle: ModelBundle, tmp_path: Path
) -> None:
    batch = generate(FUZZ_MESSAGES, "f") + huge_messages("huge")
    topics = Topics.fresh(broker)
    event_type = event_model(bundle.spec)

    # What each message must become, decided by the scorer's own decode; two
    # events that happen to share a hostile tx id (say "0") are sent once.
    expected, sent, seen_ids = [], [], set()
    for key, value in batch:
        probe = decode(
            value, key, SourceRef(topic="x", partition=0, offset=0), event_type
        )
        if not isinstance(probe, DeadLetter):
            if probe.tx_id in seen_ids:
                continue
            seen_ids.add(probe.tx_id)
        sent.append((key, value))
        expected.append(probe)
    places = send_recorded(broker, topics.input, sent)
    ids = [
        p.tx_id
        if not isinstance(p, DeadLetter)
        else (key.decode() if key is not None else f"@{part}:{offset}")
        for p, (key, _), (part, offset) in zip(expected, sent, places, strict=True)
    ]

    log = tmp_path / "scorer.log"
    scorer = start_scorer(broker, registry, topics, log)
    try:
        with Tail(broker, [topics.output, topics.dead_letter]) as tail:
            # 10,000 messages, most of them decoded and refused in microseconds.
            assert tail.wait_for(len(sent), timeout_s=240), log.read_text()[-3000:]
            tail.settle(quiet_s=2)
            results = tail.snapshot(topics.output)
            letters = tail.snapshot(topics.dead_letter)
        assert scorer.poll() is None, "the scorer died on hostile input"
    finally:
        assert stop(scorer) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()

    kinds = Counter(letter["error"] for letter in letters)
    print(f"fuzz dead letters by kind: {dict(sorted(kinds.items()))}", flush=True)
    for letter in letters:
        check_letter(
            DeadLetter.model_validate(
                {k: v for k, v in letter.items() if not k.startswith("_")}
            )
        )
    counted = tally(f"hostile fuzz ({len(sent)} messages)", ids, results, letters)
    counted.check()
    assert kinds.keys() >= {
        "empty",
        "not_utf8",
        "not_json",
        "not_object",
        "missing_tx_id",
        "invalid_field",
        "duplicate_key",
    }

    # Good events in mixed batches scored as they would be alone (a sample).
    by_id = {r["tx_id"]: r for r in results}
    good = [
        (k, v)
        for (k, v), p in zip(sent, expected, strict=True)
        if not isinstance(p, DeadLetter)
    ]
    for key, value in random.Random(79).sample(good, 200):
        alone = _decode_and_score(bundle, None, as_records([(key, value)]), 3)
        document = dict(by_id[orjson.loads(alone.encoded_results[0][1])["tx_id"]])
        for volatile in ("scored_at", "_offset"):
            document.pop(volatile)
        assert stable(alone.encoded_results[0][1]) == document

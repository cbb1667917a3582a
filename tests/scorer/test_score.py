"""The stream's fast result encoding is the contract's own serialisation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from scorer.score import score_events
from txrisk.bundle import load_bundle
from txrisk.contracts import RiskResult, event_model
from txrisk.frame import to_frame


def test_encoded_bytes_equal_the_contract_serialisation(registry: Path) -> None:
    bundle = load_bundle(registry, "v1")
    event_type = event_model(bundle.spec)
    events = [event_type.model_validate(e) for e in bundle.metadata.canary.events]
    events.append(event_type.model_validate({"tx_id": "only-an-id"}))
    scored_at = datetime(2026, 12, 3, 16, 57, 0, 12_000, tzinfo=UTC)

    scored = score_events(bundle, events, 3, scored_at)

    partitions = list(range(len(scored)))
    encoded = scored.encoded(partitions)
    assert [partition for _, _, partition in encoded] == partitions
    for (key, value, _), result in zip(encoded, scored.results(), strict=True):
        assert value == result.model_dump_json().encode()
        assert key == result.tx_id.encode()
        assert RiskResult.model_validate_json(value) == result


def test_probabilities_equal_the_plain_pipeline(registry: Path) -> None:
    bundle = load_bundle(registry, "v1")
    event_type = event_model(bundle.spec)
    rows = bundle.metadata.canary.events
    events = [event_type.model_validate(e) for e in rows]

    scored = score_events(bundle, events, 3, datetime.now(UTC))

    plain = bundle.pipeline.predict_proba(to_frame(bundle.spec, rows))[:, 1]
    np.testing.assert_array_equal(scored.probabilities, plain)
    assert list(scored.flagged) == [p >= bundle.metadata.threshold for p in plain]


def test_flagged_only_explains_exactly_the_flagged(registry: Path) -> None:
    bundle = load_bundle(registry, "v1")
    event_type = event_model(bundle.spec)
    events = [event_type.model_validate(e) for e in bundle.metadata.canary.events]
    now = datetime.now(UTC)

    every = score_events(bundle, events, 3, now)
    flagged = score_events(bundle, events, 3, now, flagged_only=True)

    assert flagged.flagged.any() and not flagged.flagged.all()
    for is_flagged, all_ranked, some_ranked in zip(
        flagged.flagged, every.ranked, flagged.ranked, strict=True
    ):
        assert some_ranked == (all_ranked if is_flagged else [])

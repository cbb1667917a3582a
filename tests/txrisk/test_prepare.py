"""The compiled prepare step gives the fitted ColumnTransformer's output exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from trainer.data import load_dataset, to_events
from trainer.pipeline import build_pipeline
from txrisk.bundle import load_bundle
from txrisk.contracts import event_model
from txrisk.frame import to_frame
from txrisk.prepare import compile_prepare
from txrisk.spec import load_spec


@pytest.fixture(scope="module")
def rows(synthetic_file: Path) -> list[dict]:
    spec = load_spec("gateway")
    dataset = load_dataset(synthetic_file, spec)
    events = to_events(dataset, spec, np.arange(3_000))
    # Unseen categories, the imputer's own fill value, and all-missing events.
    events[0]["chain"] = "a-chain-never-seen"
    events[1]["token_type"] = "(missing)"
    events[2] = {"tx_id": "bare"}
    event_type = event_model(spec)
    return [event_type.model_validate(e).__dict__ for e in events]


def test_bit_identical_to_the_pipeline(registry: Path, rows: list[dict]) -> None:
    bundle = load_bundle(registry, "v1")
    assert bundle.compiled is not None

    expected = bundle.pipeline[:-1].transform(to_frame(bundle.spec, rows))

    np.testing.assert_array_equal(bundle.compiled.transform(rows), expected)
    np.testing.assert_array_equal(bundle.prepare_rows(rows[:1]), expected[:1])


def test_other_pipelines_too(synthetic_file: Path, rows: list[dict]) -> None:
    spec = load_spec("gateway")
    dataset = load_dataset(synthetic_file, spec)
    pipeline = build_pipeline(spec, LogisticRegression(max_iter=200))
    pipeline.fit(dataset.X, dataset.y)

    compiled = compile_prepare(pipeline[0])

    assert compiled is not None
    expected = pipeline[:-1].transform(to_frame(spec, rows))
    np.testing.assert_array_equal(compiled.transform(rows), expected)


def test_unknown_structure_is_not_compiled(registry: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler

    bundle = load_bundle(registry, "v1")
    other = ColumnTransformer([("numeric", MinMaxScaler(), list(bundle.spec.numeric))])
    other.fit(to_frame(bundle.spec, bundle.metadata.canary.events))

    assert compile_prepare(other) is None

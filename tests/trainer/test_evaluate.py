"""Tests of the splits and metrics the study reports: time order, threshold, top k%."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.evaluate import (
    check_split,
    classification_metrics,
    operating_point,
    precision_at_top,
    stratified_split,
    threshold_for_recall,
    time_ordered_split,
)
from txrisk.errors import DataError


def _times(n: int, seed: int, distinct: int | None = None) -> pd.Series:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, distinct or 10**9, size=n)
    # Shuffled and full of ties: the split must sort and keep ties together.
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True))


@pytest.mark.parametrize("distinct", [None, 50])
def test_time_ordered_split_puts_no_test_row_before_a_training_row(
    distinct: int | None,
) -> None:
    times = _times(5_000, seed=1, distinct=distinct)
    split = time_ordered_split(times, test_size=0.2, threshold_size=0.2)

    fit, threshold, test = (
        times.iloc[p] for p in (split.fit, split.threshold, split.test)
    )
    assert split.time_ordered
    assert fit.max() < threshold.min()
    assert threshold.max() < test.min()
    assert max(fit.max(), threshold.max()) < test.min()
    # Every row lands in exactly one part, and the parts have the asked sizes.
    rows = np.concatenate([split.fit, split.threshold, split.test])
    assert sorted(rows.tolist()) == list(range(len(times)))
    assert len(split.test) == pytest.approx(1_000, rel=0.1 if distinct else 0.01)


def test_time_ordered_split_refuses_a_single_timestamp() -> None:
    times = pd.Series(pd.to_datetime([0] * 100, unit="s", utc=True))
    with pytest.raises(DataError, match="distinct timestamps"):
        time_ordered_split(times, test_size=0.2, threshold_size=0.2)


def test_stratified_split_keeps_the_fraud_rate_and_check_split_needs_both_classes() -> (
    None
):
    y = np.zeros(2_000, dtype=np.int64)
    y[:100] = 1
    split = stratified_split(y, 0.2, 0.2, seed=0)
    assert not split.time_ordered
    for part in (split.fit, split.threshold, split.test):
        assert y[part].mean() == pytest.approx(0.05, abs=0.01)
    check_split(y, split)

    late_fraud = np.zeros(1_000, dtype=np.int64)
    late_fraud[-50:] = 1  # all fraud in the last period: the fit part has none
    times = pd.Series(pd.to_datetime(np.arange(1_000), unit="s", utc=True))
    with pytest.raises(DataError, match="fit part .* single class"):
        check_split(late_fraud, time_ordered_split(times, 0.2, 0.2))


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.99])
def test_threshold_reaches_the_target_recall_on_the_set_it_was_chosen_on(
    target: float,
) -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(5_000) < 0.02).astype(np.int64)
    scores = np.clip(rng.normal(0.2 + 0.3 * y, 0.15), 0, 1)

    threshold = threshold_for_recall(y, scores, target)
    metrics = classification_metrics(y, scores, threshold)
    assert metrics["recall"] >= target
    point = operating_point(y, scores, target)
    assert point["recall"] >= target
    assert point["precision"] == pytest.approx(metrics["precision"])


def test_precision_at_top_counts_fraud_among_the_highest_scores() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert precision_at_top(y, scores, 0.1) == 1.0
    assert precision_at_top(y, scores, 0.2) == 0.5
    assert precision_at_top(y, scores, 0.3) == pytest.approx(2 / 3)
    # Fewer rows than the share asks for still looks at the top one.
    assert precision_at_top(y, scores, 0.01) == 1.0

"""Tests of model selection, tuning and the study's data preparation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trainer.data import load_dataset
from trainer.generate import generate, write_table
from trainer.select import CANDIDATE_NAMES, compare, markdown_table, table_notes
from trainer.study import StudyOptions, prepare
from trainer.tune import halving_rounds, pipeline_params, tune
from txrisk.errors import DataError
from txrisk.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
ETHEREUM_DATA = REPO / "data" / "ethereum" / "transactions.csv.gz"


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("select") / "small.parquet"
    write_table(generate(3_000, seed=5), path)
    return path


def test_selection_returns_every_candidate_with_finite_metrics(
    small_file: Path,
) -> None:
    spec = load_spec("gateway")
    prepared = prepare(small_file, spec, StudyOptions(folds=3))
    data, split = prepared.dataset, prepared.split

    selection = compare(
        spec,
        data.X,
        data.y,
        split.fit,
        split.threshold,
        folds=3,
        seed=0,
        slow_rows=1_000,
        latency_calls=5,
    )

    assert sorted(r.name for r in selection.results) == sorted(CANDIDATE_NAMES)
    for r in selection.results:
        values = [
            r.roc_auc_mean,
            r.roc_auc_std,
            r.pr_auc_mean,
            r.pr_auc_std,
            r.holdout_roc_auc,
            r.holdout_pr_auc,
            r.single_p50_ms,
            r.single_p95_ms,
            r.batch_p50_us,
            r.batch_p95_us,
        ]
        assert all(math.isfinite(v) for v in values), r
        assert 0.0 <= r.roc_auc_mean <= 1.0 and r.single_p95_ms >= r.single_p50_ms
    # Ranked by CV PR AUC; the served model is the best explainable one.
    pr = [r.pr_auc_mean for r in selection.results]
    assert pr == sorted(pr, reverse=True)
    assert selection.winner == selection.results[0].name
    served = next(r for r in selection.results if r.explainable)
    assert selection.served == served.name
    assert {r.name for r in selection.results if not r.explainable} == {
        "forest",
        "adaboost",
    }
    # Slow models ran on the subsample, and the table says so.
    slow = {r.name: r.cv_rows for r in selection.results}
    assert slow["gboost"] == 1_000 and slow["hgb"] == len(split.development)
    text = markdown_table(selection) + table_notes(selection)
    assert "subsample" in text and text.count("\n|") >= len(CANDIDATE_NAMES) + 1


def test_halving_rounds_match_the_search(small_file: Path) -> None:
    spec = load_spec("gateway")
    prepared = prepare(small_file, spec, StudyOptions(folds=3))
    rows = prepared.split.development
    X, y = prepared.dataset.X.iloc[rows], prepared.dataset.y[rows]

    result = tune(spec, X, y, model="logreg", folds=3, seed=0, n_candidates=4, factor=2)

    assert [r["candidates"] for r in result.rounds][0] == 4
    assert result.fits == sum(r["candidates"] for r in result.rounds) * 3
    assert math.isfinite(result.best_score) and 0.0 < result.best_score <= 1.0
    assert set(result.best_params) == {"C", "class_weight"}
    assert pipeline_params(result.best_params, "logreg")["classify__C"] > 0
    assert halving_rounds(24, 3, 1_000, 20_000) == [(24, 1_000), (8, 3_000), (3, 9_000)]


def test_prepare_drops_the_exact_duplicates_of_the_ethereum_set() -> None:
    spec = load_spec("ethereum")
    prepared = prepare(ETHEREUM_DATA, spec, StudyOptions())
    assert prepared.file_rows == 71_239
    assert prepared.duplicates == 3_750 and prepared.duplicates_removed
    assert len(prepared.dataset.y) == 71_239 - 3_750
    times = prepared.dataset.timestamps
    assert times is not None
    assert (
        times.iloc[prepared.split.development].max()
        < times.iloc[prepared.split.test].min()
    )

    kept = prepare(ETHEREUM_DATA, spec, StudyOptions(keep_duplicates=True))
    assert len(kept.dataset.y) == 71_239 and not kept.duplicates_removed


def test_prepare_refuses_fewer_rows_or_fraud_than_folds(tmp_path: Path) -> None:
    frame = generate(400, seed=1)
    frame["is_fraud"] = 0
    frame.loc[frame.index[[10, 200, 390]], "is_fraud"] = 1
    path = tmp_path / "rare.csv"
    write_table(frame, path)
    spec = load_spec("gateway")
    assert load_dataset(path, spec).y.sum() == 3

    with pytest.raises(DataError, match="--folds 5: the data has only 3 fraud rows"):
        prepare(path, spec, StudyOptions(folds=5))
    few = tmp_path / "few.csv"
    write_table(frame.iloc[[10, 11, 200]], few)
    with pytest.raises(DataError, match="--folds 5: the data has only 3 rows"):
        prepare(few, spec, StudyOptions(folds=5))
    assert np.all(frame["is_fraud"].isin([0, 1]))

"""The tabulated TreeSHAP gives the shap library's values, on every kind of tree."""

from __future__ import annotations

import numpy as np
import pytest
import shap
from sklearn.ensemble import HistGradientBoostingClassifier

from txrisk.treeshap import LeafTableTreeShap


def data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 6))
    X[:, 5] = rng.integers(0, 2, size=rows)  # a one-hot-like column
    logit = X[:, 0] * X[:, 1] + np.abs(X[:, 2]) - X[:, 5] + rng.normal(size=rows)
    return X, (logit > 1.0).astype(int)


@pytest.mark.parametrize(
    "params",
    [
        {"max_depth": 3, "max_leaf_nodes": 6, "max_iter": 60},
        {"max_depth": None, "max_leaf_nodes": 31, "max_iter": 30},
        {"max_depth": 2, "max_leaf_nodes": 4, "max_iter": 100, "learning_rate": 0.3},
    ],
)
def test_equals_shap_library(params: dict) -> None:
    X, y = data(4_000, seed=1)
    X[::11, 2] = np.nan  # missing values take each node's learned side
    model = HistGradientBoostingClassifier(random_state=0, **params).fit(X, y)
    reference = shap.TreeExplainer(model, model_output="raw")

    ours = LeafTableTreeShap(model, X.shape[1])
    expected = reference.shap_values(X[:500], check_additivity=False)

    np.testing.assert_allclose(ours.shap_values(X[:500]), expected, atol=1e-9)
    assert ours.expected_value == pytest.approx(
        float(np.ravel(reference.expected_value)[0])
    )


def test_sums_to_log_odds_and_projects() -> None:
    X, y = data(3_000, seed=2)
    model = HistGradientBoostingClassifier(max_depth=3, random_state=0).fit(X, y)
    project = np.zeros((6, 2))
    project[:3, 0] = 1.0
    project[3:, 1] = 1.0

    columns = LeafTableTreeShap(model, 6).shap_values(X)
    grouped = LeafTableTreeShap(model, 6, project=project)

    np.testing.assert_allclose(
        columns.sum(axis=1) + grouped.expected_value,
        model.decision_function(X),
        atol=1e-9,
    )
    np.testing.assert_allclose(grouped.shap_values(X), columns @ project, atol=1e-12)


def test_batch_invariant() -> None:
    X, y = data(2_000, seed=3)
    model = HistGradientBoostingClassifier(max_depth=3, random_state=0).fit(X, y)
    explainer = LeafTableTreeShap(model, 6)
    whole = explainer.shap_values(X[:2_000])
    alone = np.vstack(
        [explainer.shap_values(X[i : i + 1]) for i in range(0, 2_000, 97)]
    )
    np.testing.assert_array_equal(alone, whole[::97])

"""Global feature importance and example explanations, in the spec's field names.

Three views, because each answers a different question:
- impurity (split gain): what the trees leaned on while fitting;
- permutation: how much PR AUC on the test period drops when a field is
  shuffled, i.e. what the model needs on new data;
- mean |contribution|: the average size of the field's log-odds term in the
  explanations the scorer publishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from txrisk.explain import Explainer, top_features
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

PERMUTATION_ROWS = 20_000
PERMUTATION_REPEATS = 5
CONTRIBUTION_ROWS = 2_000


@dataclass(frozen=True)
class Example:
    """One flagged event, its outcome and its top contributing fields."""

    tx_id: str
    probability: float
    is_fraud: bool
    values: dict[str, Any]
    contributions: list[tuple[str, float]]


def global_importance(
    pipeline: Pipeline,
    spec: FeatureSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    seed: int,
) -> tuple[pd.DataFrame, str]:
    """One row per field: model-based, permutation (mean, std) and contribution.

    Returns the table, sorted by permutation importance, and the name of the
    model-based measure (split gain, impurity decrease or |coefficient| term).
    """
    explainer = Explainer(pipeline, spec)
    model_based, kind = _model_importance(pipeline, explainer, X)

    rows = _sample(y, PERMUTATION_ROWS, seed)
    permuted = permutation_importance(
        pipeline,
        X.iloc[rows],
        y[rows],
        scoring="average_precision",
        n_repeats=PERMUTATION_REPEATS,
        random_state=seed,
    )

    sample = X.iloc[_sample(y, CONTRIBUTION_ROWS, seed)]
    explained = explainer.explain(pipeline[:-1].transform(sample))
    table = pd.DataFrame(
        {
            "model_based": model_based,
            "permutation_mean": permuted.importances_mean,
            "permutation_std": permuted.importances_std,
            "mean_abs_contribution": np.abs(explained.contributions).mean(axis=0),
        },
        index=pd.Index(explainer.fields, name="field"),
    )
    return table.sort_values("permutation_mean", ascending=False), kind


def _model_importance(
    pipeline: Pipeline, explainer: Explainer, X: pd.DataFrame
) -> tuple[np.ndarray, str]:
    classifier = pipeline[-1]
    if isinstance(classifier, HistGradientBoostingClassifier):
        # scikit-learn exposes no importances for histogram boosting; the
        # split gains stored in its fitted trees are the impurity decrease.
        gains = np.zeros(classifier.n_features_in_)
        for predictors in classifier._predictors:
            for predictor in predictors:
                nodes = predictor.nodes[~predictor.nodes["is_leaf"].astype(bool)]
                np.add.at(gains, nodes["feature_idx"], nodes["gain"])
        folded = explainer.fold(gains)
        return folded / folded.sum() if folded.sum() > 0 else folded, "split gain"
    if isinstance(classifier, LogisticRegression):
        # Linear: the mean size of each field's coefficient term.
        prepared = pipeline[:-1].transform(X.iloc[:CONTRIBUTION_ROWS])
        terms = np.abs(prepared * classifier.coef_[0]).mean(axis=0)
        folded = explainer.fold(terms)
        return folded / folded.sum(), "|coefficient x value|"
    folded = explainer.fold(classifier.feature_importances_)
    return folded / folded.sum(), "impurity decrease"


def _sample(y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    rows = np.arange(len(y))
    if len(rows) <= cap:
        return rows
    kept, _ = train_test_split(rows, train_size=cap, stratify=y, random_state=seed)
    return np.sort(kept)


def flagged_examples(
    pipeline: Pipeline,
    spec: FeatureSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    ids: pd.Series,
    scores: np.ndarray,
    threshold: float,
    count: int = 5,
    k: int = 3,
) -> list[Example]:
    """The highest-scoring flagged events plus the highest false alarms.

    Caught fraud shows what the model keys on; false alarms show what a
    legitimate customer who gets flagged will be told.
    """
    flagged = np.flatnonzero(scores >= threshold)
    order = flagged[np.argsort(-scores[flagged], kind="stable")]
    caught = [i for i in order if y[i] == 1][:count]
    false_alarms = [i for i in order if y[i] == 0][: max(1, count // 2)]
    chosen = np.array(caught + false_alarms, dtype=np.int64)
    if chosen.size == 0:
        return []

    explainer = Explainer(pipeline, spec)
    frame = X.iloc[chosen]
    explained = explainer.explain(pipeline[:-1].transform(frame))
    ranked = top_features(explained, explainer.fields, k)
    examples = []
    for position, row in enumerate(chosen):
        values = {
            name: (None if pd.isna(value) else value)
            for name, value in frame.iloc[position].items()
        }
        examples.append(
            Example(
                tx_id=str(ids.iloc[row]),
                probability=float(scores[row]),
                is_fraud=bool(y[row]),
                values=values,
                contributions=ranked[position],
            )
        )
    return examples

"""Per-event explanations: each input field's signed contribution in log-odds.

Tree ensembles whose raw output is the log-odds are explained with exact
path-dependent TreeSHAP: histogram gradient boosting through the tabulated
implementation in `txrisk.treeshap` (the same values as the `shap` library,
several times faster on a batch), classic gradient boosting through `shap`
itself. Logistic regression is explained with its exact coefficient terms.
Either way the contributions of an event plus the base value add up to the
model's log-odds for that event. One-hot columns are folded back into the field
they came from, so a regulator reads `chain`, not `chain_tron`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from txrisk.errors import BundleError
from txrisk.spec import FeatureSpec
from txrisk.treeshap import LeafTableTreeShap, Unsupported

logger = logging.getLogger(__name__)

TREE_MODELS = (HistGradientBoostingClassifier, GradientBoostingClassifier)
LINEAR_MODELS = (LogisticRegression,)


def is_explainable(estimator: Any) -> bool:
    """Whether `Explainer` can give log-odds contributions for this classifier."""
    return isinstance(estimator, TREE_MODELS + LINEAR_MODELS)


@dataclass(frozen=True)
class Explanation:
    """Contributions per event and field, and the base value they start from."""

    contributions: np.ndarray  # shape (events, fields), log-odds
    base_value: float


class Explainer:
    """Explains a fitted `prepare -> classify` pipeline at the level of spec fields."""

    def __init__(self, pipeline: Pipeline, spec: FeatureSpec) -> None:
        prepare, classifier = pipeline[:-1], pipeline[-1]
        if not is_explainable(classifier):
            raise BundleError(
                f"cannot explain a {type(classifier).__name__} in log-odds; "
                "use gradient boosting, histogram gradient boosting or logistic "
                "regression"
            )

        self.fields = spec.columns
        self._fold = _fold_matrix(prepare[-1], self.fields)

        self._coef: np.ndarray | None = None
        self._fast: LeafTableTreeShap | None = None
        self._tree = None
        if isinstance(classifier, LINEAR_MODELS):
            self._coef = np.asarray(classifier.coef_[0], dtype=np.float64)
            self._base = float(classifier.intercept_[0])
        elif isinstance(classifier, HistGradientBoostingClassifier) and self._fast_ok(
            classifier
        ):
            assert self._fast is not None
            self._base = self._fast.expected_value
        else:
            # Imported here: shap pulls in numba, which the trainer's other
            # commands do not need.
            import shap

            self._tree = shap.TreeExplainer(classifier, model_output="raw")
            self._base = float(np.ravel(self._tree.expected_value)[0])

    def explain(self, prepared: np.ndarray) -> Explanation:
        """Field contributions for rows already through the pipeline's prepare."""
        if self._fast is not None:
            fields = self._fast.shap_values(prepared)
            return Explanation(contributions=fields, base_value=self._base)

        if self._coef is not None:
            columns = prepared * self._coef
        else:
            assert self._tree is not None
            columns = self._tree.shap_values(prepared, check_additivity=False)
            columns = np.asarray(columns, dtype=np.float64)
            if columns.ndim == 3:  # (events, columns, classes) in some versions
                columns = columns[:, :, -1]

        return Explanation(contributions=self.fold(columns), base_value=self._base)

    def _fast_ok(self, classifier: HistGradientBoostingClassifier) -> bool:
        """Use the tabulated TreeSHAP (same values, several times faster) if it fits."""
        try:
            self._fast = LeafTableTreeShap(
                classifier, self._fold.shape[0], project=self._fold
            )
        except Unsupported as exc:
            logger.info("explaining with the shap library: %s", exc)
            return False
        return True

    def fold(self, columns: np.ndarray) -> np.ndarray:
        """Sum per-prepared-column values (contributions, importances) per field."""
        return np.asarray(columns, dtype=np.float64) @ self._fold


def top_features(
    explanation: Explanation, fields: list[str], k: int
) -> list[list[tuple[str, float]]]:
    """For each event the k fields with the largest absolute contribution."""
    contributions = explanation.contributions
    k = min(k, contributions.shape[1])
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]

    ranked = []
    for row, indices in enumerate(order):
        ranked.append([(fields[i], float(contributions[row, i])) for i in indices])
    return ranked


def _fold_matrix(prepare: ColumnTransformer, fields: list[str]) -> np.ndarray:
    """A 0/1 matrix mapping each prepared column to the spec field it came from."""
    n_out = sum(s.stop - s.start for s in prepare.output_indices_.values())
    fold = np.zeros((n_out, len(fields)), dtype=np.float64)

    for name, _, columns in prepare.transformers_:
        if name == "remainder":
            continue
        out = prepare.output_indices_[name]
        if out.stop == out.start:
            continue
        if len(columns) == 1:
            fold[out, fields.index(columns[0])] = 1.0
        elif out.stop - out.start == len(columns):
            # One output per input column, in order (imputer + scaler).
            for offset, column in enumerate(columns):
                fold[out.start + offset, fields.index(column)] = 1.0
        else:
            raise BundleError(
                f"cannot map the outputs of transformer {name!r} back to its fields"
            )

    return fold

"""The preprocessing + classifier pipeline every model is trained in."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from txrisk.spec import FeatureSpec

# Categories seen in fewer than this share of training rows are pooled into one
# "infrequent" column: the long tail of countries and tokens would otherwise
# add hundreds of near-empty columns that only overfit.
MIN_CATEGORY_SHARE = 0.001
# At most this many columns per categorical field (the rest pooled likewise):
# it bounds the width the trees, and the explainer, work through.
MAX_CATEGORIES = 16


def default_classifier(seed: int = 0) -> HistGradientBoostingClassifier:
    """The seed model: histogram gradient boosting with many shallow trees.

    Explaining an event costs about trees x leaves x depth^2, and every event is
    explained. On the synthetic gateway data, 200 trees of depth 3 score as well
    as 120 trees of 31 leaves (ROC AUC 0.949 vs 0.948) and explain 12x faster.
    """
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.15,
        max_leaf_nodes=6,
        max_depth=3,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=seed,
    )


def build_pipeline(spec: FeatureSpec, classifier: Any | None = None) -> Pipeline:
    """`prepare` (impute, scale, one-hot) followed by `classify`.

    Each categorical field gets its own encoder so that explanations can fold
    its one-hot columns back into the field; numbers share one imputer and
    scaler, which keep one output column per input column.
    """
    transformers: list[tuple[str, Any, list[str]]] = []

    if spec.numeric:
        numeric = Pipeline(
            [
                # keep_empty_features: a column that is all missing in training
                # must still map to its field when explaining.
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("numeric", numeric, list(spec.numeric)))

    for index, name in enumerate(spec.categorical):
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                (
                    "encode",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=MIN_CATEGORY_SHARE,
                        max_categories=MAX_CATEGORIES,
                        sparse_output=False,
                    ),
                ),
            ]
        )
        transformers.append((f"categorical_{index}", categorical, [name]))

    prepare = ColumnTransformer(
        transformers, remainder="drop", verbose_feature_names_out=False
    )
    # `is None`, not `or`: an unfitted ensemble has no length and cannot be truthy.
    classify = default_classifier() if classifier is None else classifier
    return Pipeline([("prepare", prepare), ("classify", classify)])


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values; objects are written by name."""
    plain: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or isinstance(value, bool | int | float | str):
            plain[key] = value
        else:
            plain[key] = repr(value)
    return plain

"""Train the seed pipeline, choose its threshold and write a model bundle."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from trainer.data import Dataset, load_dataset, to_events
from trainer.evaluate import classification_metrics, threshold_for_recall
from trainer.pipeline import build_pipeline, plain_params
from txrisk.bundle import (
    BundleMetadata,
    check_version_name,
    library_versions,
    new_version,
    save_bundle,
    signing_key,
)
from txrisk.errors import BundleError, DataError, UserError
from txrisk.explain import is_explainable
from txrisk.frame import to_frame
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

CANARY_SIZE = 32


@dataclass(frozen=True)
class TrainOptions:
    seed: int = 0
    test_size: float = 0.2
    # Share of the training part held out to choose the threshold, so that the
    # test set's precision and recall are measured on rows nothing was tuned on.
    threshold_size: float = 0.2
    target_recall: float = 0.9
    version: str | None = None
    # Write report.md, report.html and plots into the bundle (the CLI's default).
    report: bool = False


def train(
    data: Path, spec: FeatureSpec, registry: Path, options: TrainOptions
) -> BundleMetadata:
    """Fit, evaluate on a stratified hold-out, and save a bundle into `registry`.

    1. load the file through the spec
    2. split: fit / threshold / test, stratified on the label
    3. fit the pipeline
    4. pick the threshold reaching the target recall on the threshold part
    5. measure on the test part
    6. save the bundle with its canary batch
    """
    if options.version is not None:
        # Checked before, not after, a long fit.
        try:
            check_version_name(options.version)
        except BundleError as exc:
            raise UserError(f"--version: {exc}") from exc
    dataset = load_dataset(data, spec)

    fit_rows, threshold_rows, test_rows = _split(dataset, options)

    pipeline = build_pipeline(spec)
    pipeline.set_params(classify__random_state=options.seed)
    pipeline.fit(dataset.X.iloc[fit_rows], dataset.y[fit_rows])

    held_out = pipeline.predict_proba(dataset.X.iloc[threshold_rows])[:, 1]
    threshold = threshold_for_recall(
        dataset.y[threshold_rows], held_out, options.target_recall
    )

    test_scores = pipeline.predict_proba(dataset.X.iloc[test_rows])[:, 1]
    metrics = classification_metrics(dataset.y[test_rows], test_scores, threshold)
    logger.info(
        "trained roc_auc=%.4f pr_auc=%.4f threshold=%.4f precision=%.4f recall=%.4f",
        metrics["roc_auc"],
        metrics["pr_auc"],
        threshold,
        metrics["precision"],
        metrics["recall"],
    )

    canary_events = to_events(dataset, spec, test_rows[:CANARY_SIZE])
    canary_scores = pipeline.predict_proba(to_frame(spec, canary_events))[:, 1]

    classifier = pipeline[-1]
    assert is_explainable(classifier)
    metadata: dict[str, Any] = {
        "version": options.version or new_version(registry),
        "created_at": datetime.now(UTC),
        "estimator": type(classifier).__name__,
        "params": plain_params(classifier.get_params()),
        "spec": spec,
        "threshold": threshold,
        "target_recall": options.target_recall,
        "metrics": {**metrics, "test_rows": float(len(test_rows))},
        "data": dataset.fingerprint,
        "libraries": library_versions(),
        "canary": {"events": canary_events, "probabilities": canary_scores.tolist()},
    }
    extra_files = None
    if options.report:
        from trainer.study import StudyOptions, train_report

        extra_files = train_report(
            data,
            spec,
            dataset,
            (fit_rows, threshold_rows, test_rows),
            pipeline,
            metadata["version"],
            StudyOptions(
                seed=options.seed,
                target_recall=options.target_recall,
                test_size=options.test_size,
                threshold_size=options.threshold_size,
            ),
        )
    return save_bundle(
        registry, pipeline, metadata, key=signing_key(), extra_files=extra_files
    )


def _split(
    dataset: Dataset, options: TrainOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.arange(len(dataset.y))
    minority = int(min(dataset.y.sum(), len(dataset.y) - dataset.y.sum()))
    if minority < 10:
        raise DataError(
            f"only {minority} rows of the rarer class; at least 10 are needed to "
            "train, choose a threshold and test"
        )

    try:
        rest, test = train_test_split(
            rows,
            test_size=options.test_size,
            stratify=dataset.y,
            random_state=options.seed,
        )
        fit, threshold = train_test_split(
            rest,
            test_size=options.threshold_size,
            stratify=dataset.y[rest],
            random_state=options.seed,
        )
    except ValueError as exc:
        raise DataError(f"cannot split the data ({exc})") from exc
    return fit, threshold, test

"""The full study: compare, tune, train, validate and report, in one command.

Data are split once. With a timestamp the split is time-ordered: fit on the
oldest part, choose the threshold on the next period, test on the latest, as
the model will meet the future in production. Selection and tuning see only
the part before the test period; the test period is scored once, at the end,
and its figures are the ones to act on. Stratified cross-validation on the
development part is reported beside them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import make_scorer
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from trainer.data import Dataset, load_dataset, to_events
from trainer.evaluate import (
    Split,
    brier,
    calibration_table,
    check_split,
    classification_metrics,
    operating_point,
    precision_at_top,
    stratified_split,
    threshold_for_recall,
    time_ordered_split,
)
from trainer.importance import flagged_examples, global_importance
from trainer.pipeline import build_pipeline, plain_params
from trainer.select import (
    CANDIDATE_NAMES,
    N_JOBS,
    SINGLE_EVENT_CALLS,
    SLOW_MODEL_ROWS,
    Selection,
    candidate,
    compare,
    measure_latency,
    subsample,
)
from trainer.tune import TuneResult, pipeline_params, tune
from txrisk.bundle import (
    BundleMetadata,
    library_versions,
    new_version,
    save_bundle,
    signing_key,
)
from txrisk.errors import DataError
from txrisk.explain import Explainer
from txrisk.frame import to_frame
from txrisk.spec import FeatureSpec

if TYPE_CHECKING:
    from trainer.report import ReportInput

logger = logging.getLogger(__name__)

CANARY_SIZE = 32
# Tuning searches on a stratified subsample of at most this many development
# rows: past it, PR AUC differences between candidates are smaller than the
# spread over folds, and the search's last round dominates the study's time.
TUNE_ROWS = 100_000
CALIBRATION_METHODS = ("isotonic", "sigmoid")


@dataclass(frozen=True)
class StudyOptions:
    folds: int = 5
    seed: int = 0
    target_recall: float = 0.9
    test_size: float = 0.2
    threshold_size: float = 0.2
    top_share: float = 0.01
    models: tuple[str, ...] = CANDIDATE_NAMES
    slow_rows: int = SLOW_MODEL_ROWS
    tune: bool = True
    candidates: int = 12
    tune_rows: int = TUNE_ROWS
    keep_duplicates: bool = False
    version: str | None = None
    latency_calls: int = SINGLE_EVENT_CALLS


@dataclass(frozen=True)
class Prepared:
    """The data as studied: duplicates handled, split once."""

    dataset: Dataset
    split: Split
    file_rows: int
    duplicates: int
    duplicates_removed: bool


@dataclass(frozen=True)
class Evaluation:
    """The served model on the held-out parts, at its chosen threshold."""

    threshold: float
    threshold_scores: np.ndarray
    test_scores: np.ndarray
    metrics: dict[str, float]
    test_curve_point: dict[str, float]
    cv: dict[str, float]
    calibration: dict[str, Any]
    calibration_curves: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class StudyOutcome:
    prepared: Prepared
    selection: Selection | None
    tuning: TuneResult | None
    served: str
    params: dict[str, Any]
    pipeline: Pipeline
    evaluation: Evaluation
    timings: dict[str, float] = field(default_factory=dict)
    metadata: BundleMetadata | None = None


def prepare(data: Path, spec: FeatureSpec, options: StudyOptions) -> Prepared:
    """Load, drop exact duplicates, check the folds can be filled, split.

    1. load the file through the spec (every mismatch is a DataError)
    2. drop rows identical in every field, label and time: a copy on each side
       of a random split lets a model be graded on rows it memorised
    3. check the rows and each class outnumber the folds
    4. split by time when the spec names a timestamp, else stratified
    """
    dataset = load_dataset(data, spec)
    file_rows = len(dataset.y)

    duplicated = _duplicated(dataset, spec)
    count = int(duplicated.sum())
    if count and not options.keep_duplicates:
        dataset = _subset(dataset, np.flatnonzero(~duplicated))
        logger.info("dropped %d exact duplicate rows before splitting", count)

    _check_folds(dataset.y, options.folds, "the data")
    if dataset.timestamps is not None:
        split = time_ordered_split(
            dataset.timestamps, options.test_size, options.threshold_size
        )
    else:
        split = stratified_split(
            dataset.y, options.test_size, options.threshold_size, options.seed
        )
    check_split(dataset.y, split)
    _check_folds(dataset.y[split.development], options.folds, "the development part")
    return Prepared(
        dataset=dataset,
        split=split,
        file_rows=file_rows,
        duplicates=count,
        duplicates_removed=bool(count) and not options.keep_duplicates,
    )


def _duplicated(dataset: Dataset, spec: FeatureSpec) -> np.ndarray:
    frame = dataset.X.copy()
    frame["__label"] = dataset.y
    if dataset.timestamps is not None:
        frame["__time"] = dataset.timestamps.to_numpy()
    if spec.id_prefix is None:
        # Real ids: rows with different ids are different payments.
        frame["__id"] = dataset.ids.to_numpy()
    return frame.duplicated(keep="first").to_numpy()


def _subset(dataset: Dataset, rows: np.ndarray) -> Dataset:
    timestamps = dataset.timestamps
    if timestamps is not None:
        timestamps = timestamps.iloc[rows].reset_index(drop=True)
    return replace(
        dataset,
        X=dataset.X.iloc[rows].reset_index(drop=True),
        y=dataset.y[rows],
        ids=dataset.ids.iloc[rows].reset_index(drop=True),
        timestamps=timestamps,
    )


def _check_folds(y: np.ndarray, folds: int, where: str) -> None:
    if len(y) < folds:
        raise DataError(
            f"--folds {folds}: {where} has only {len(y)} rows; use fewer folds "
            "or more data"
        )
    fraud = int(y.sum())
    rarer, name = min((fraud, "fraud"), (len(y) - fraud, "legitimate"))
    if rarer < folds:
        raise DataError(
            f"--folds {folds}: {where} has only {rarer} {name} rows, fewer than "
            "the folds, so some fold would lack that class; use fewer folds or "
            "more data"
        )


def run_study(
    data: Path, spec: FeatureSpec, registry: Path, options: StudyOptions
) -> StudyOutcome:
    """Select, tune, train, evaluate and write the bundle with its report.

    1. prepare: load, deduplicate, split (see `prepare`)
    2. compare the candidates on the development part
    3. tune the best explainable one (the winner if it is explainable)
    4. fit it on the fit part, choose the threshold on the threshold part
    5. test on the test part; cross-validate on the development part
    6. calibration check, importance, examples, latency
    7. write the bundle with report.md, report.html and the plots
    """
    started = time.perf_counter()
    prepared = prepare(data, spec, options)
    timings = {"prepare": time.perf_counter() - started}
    dataset, split = prepared.dataset, prepared.split

    step = time.perf_counter()
    selection = select_models(spec, prepared, options)
    timings["select"] = time.perf_counter() - step
    served = selection.served

    tuning = None
    if options.tune:
        step = time.perf_counter()
        tuning = tune_model(spec, prepared, options, served)
        timings["tune"] = time.perf_counter() - step

    step = time.perf_counter()
    params = pipeline_params(tuning.best_params, served) if tuning else {}
    pipeline = build_pipeline(spec, candidate(served).make(options.seed))
    pipeline.set_params(**params)
    pipeline.fit(dataset.X.iloc[split.fit], dataset.y[split.fit])
    evaluation = evaluate_model(pipeline, prepared, options)
    timings["train_and_evaluate"] = time.perf_counter() - step

    outcome = StudyOutcome(
        prepared=prepared,
        selection=selection,
        tuning=tuning,
        served=served,
        params=params,
        pipeline=pipeline,
        evaluation=evaluation,
        timings=timings,
    )
    outcome.metadata = write_bundle(outcome, data, spec, registry, options, started)
    return outcome


def select_models(
    spec: FeatureSpec, prepared: Prepared, options: StudyOptions
) -> Selection:
    dataset, split = prepared.dataset, prepared.split
    return compare(
        spec,
        dataset.X,
        dataset.y,
        split.fit,
        split.threshold,
        folds=options.folds,
        seed=options.seed,
        names=options.models,
        slow_rows=options.slow_rows,
        time_ordered=split.time_ordered,
        latency_calls=options.latency_calls,
    )


def tune_model(
    spec: FeatureSpec, prepared: Prepared, options: StudyOptions, model: str
) -> TuneResult:
    dataset = prepared.dataset
    rows = subsample(
        prepared.split.development, dataset.y, options.tune_rows, options.seed
    )
    return tune(
        spec,
        dataset.X.iloc[rows],
        dataset.y[rows],
        model=model,
        folds=options.folds,
        seed=options.seed,
        n_candidates=options.candidates,
    )


def evaluate_model(
    pipeline: Pipeline, prepared: Prepared, options: StudyOptions
) -> Evaluation:
    """Threshold on the threshold part, figures on the test part, CV beside them."""
    # Scoring runs many short OpenMP regions; with two threads on a busy
    # machine each one waits for a descheduled thread, ten times slower.
    with threadpool_limits(1):
        return _evaluate(pipeline, prepared, options)


def _evaluate(
    pipeline: Pipeline, prepared: Prepared, options: StudyOptions
) -> Evaluation:
    dataset, split = prepared.dataset, prepared.split
    X, y = dataset.X, dataset.y

    threshold_scores = pipeline.predict_proba(X.iloc[split.threshold])[:, 1]
    threshold = threshold_for_recall(
        y[split.threshold], threshold_scores, options.target_recall
    )
    test_y = y[split.test]
    test_scores = pipeline.predict_proba(X.iloc[split.test])[:, 1]
    metrics = classification_metrics(test_y, test_scores, threshold)
    metrics["precision_top_share"] = precision_at_top(
        test_y, test_scores, options.top_share
    )
    metrics["top_share"] = options.top_share
    metrics["threshold_part_recall"] = classification_metrics(
        y[split.threshold], threshold_scores, threshold
    )["recall"]
    metrics["test_rows"] = float(len(split.test))
    metrics["test_fraud_rate"] = float(test_y.mean())

    calibration, curves = _calibration(pipeline, prepared)
    metrics["brier"] = calibration["uncalibrated"]
    return Evaluation(
        threshold=threshold,
        threshold_scores=threshold_scores,
        test_scores=test_scores,
        metrics=metrics,
        test_curve_point=operating_point(test_y, test_scores, options.target_recall),
        cv=_cross_validate(pipeline, prepared, options),
        calibration=calibration,
        calibration_curves=curves,
    )


def _cross_validate(
    pipeline: Pipeline, prepared: Prepared, options: StudyOptions
) -> dict[str, float]:
    """Stratified k-fold on the development part: mean and spread per metric.

    Precision and FPR are at the point where each fold's own curve reaches the
    target recall (in-sample thresholds: an optimistic, curve-level figure).
    """
    rows = prepared.split.development
    X, y = prepared.dataset.X.iloc[rows], prepared.dataset.y[rows]
    target = options.target_recall
    scoring = {
        "roc_auc": "roc_auc",
        "pr_auc": "average_precision",
        "precision_at_recall": make_scorer(
            _curve_value,
            response_method="predict_proba",
            key="precision",
            target=target,
        ),
        "fpr_at_recall": make_scorer(
            _curve_value,
            response_method="predict_proba",
            key="false_positive_rate",
            target=target,
        ),
    }
    splitter = StratifiedKFold(options.folds, shuffle=True, random_state=options.seed)
    with parallel_config(backend="loky", inner_max_num_threads=1):
        scores = cross_validate(
            pipeline, X, y, cv=splitter, scoring=scoring, n_jobs=N_JOBS
        )
    out = {"folds": float(options.folds), "rows": float(len(rows))}
    for name in scoring:
        values = scores[f"test_{name}"]
        out[f"{name}_mean"] = float(np.mean(values))
        out[f"{name}_std"] = float(np.std(values))
    return out


def _curve_value(y: np.ndarray, scores: np.ndarray, key: str, target: float) -> float:
    return operating_point(y, scores, target)[key]


def _calibration(
    pipeline: Pipeline, prepared: Prepared
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Brier score on the test part, raw and after fitting a calibrator.

    The calibrators are fitted on the threshold part, never on the test part.
    Only reported: the served model stays uncalibrated, so its explanations
    keep adding up to its own log-odds.
    """
    dataset, split = prepared.dataset, prepared.split
    X_cal, y_cal = dataset.X.iloc[split.threshold], dataset.y[split.threshold]
    X_test, y_test = dataset.X.iloc[split.test], dataset.y[split.test]

    raw = pipeline.predict_proba(X_test)[:, 1]
    result: dict[str, Any] = {"uncalibrated": brier(y_test, raw)}
    curves = {"uncalibrated": calibration_table(y_test, raw)}
    for method in CALIBRATION_METHODS:
        calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method=method)
        calibrated.fit(X_cal, y_cal)
        scores = calibrated.predict_proba(X_test)[:, 1]
        result[method] = brier(y_test, scores)
        curves[method] = calibration_table(y_test, scores)
    best = min(CALIBRATION_METHODS, key=lambda m: result[m])
    result["best"] = best
    result["helped"] = bool(result[best] < result["uncalibrated"])
    result["served"] = "uncalibrated"
    return result, curves


def canary(
    pipeline: Pipeline, dataset: Dataset, spec: FeatureSpec, rows: np.ndarray
) -> dict[str, Any]:
    events = to_events(dataset, spec, rows[:CANARY_SIZE])
    scores = pipeline.predict_proba(to_frame(spec, events))[:, 1]
    return {"events": events, "probabilities": scores.tolist()}


def build_report(
    outcome: StudyOutcome,
    data: Path,
    spec: FeatureSpec,
    version: str,
    options: StudyOptions,
    started: float,
) -> tuple[ReportInput, dict[str, bytes]]:
    """Importance, examples and latency, then the report files."""
    from trainer.report import ReportInput, render

    step = time.perf_counter()
    prepared, pipeline = outcome.prepared, outcome.pipeline
    dataset, split = prepared.dataset, prepared.split
    X_test, y_test = dataset.X.iloc[split.test], dataset.y[split.test]
    with threadpool_limits(1):  # many short predictions: see evaluate_model
        importance, importance_kind = global_importance(
            pipeline, spec, X_test, y_test, options.seed
        )
        examples = flagged_examples(
            pipeline,
            spec,
            X_test,
            y_test,
            dataset.ids.iloc[split.test],
            outcome.evaluation.test_scores,
            outcome.evaluation.threshold,
        )
    latency = measure_latency(pipeline, X_test, options.latency_calls)
    latency.update(explain_latency(pipeline, spec, X_test))
    outcome.timings["report_inputs"] = time.perf_counter() - step

    report_input = ReportInput(
        version=version,
        created_at=datetime.now(UTC),
        source=data.name,
        spec=spec,
        estimator=type(pipeline[-1]).__name__,
        prepared=prepared,
        selection=outcome.selection,
        tuning=outcome.tuning,
        evaluation=outcome.evaluation,
        target_recall=options.target_recall,
        importance=importance,
        importance_kind=importance_kind,
        examples=examples,
        latency=latency,
        timings=outcome.timings,
        started=started,
        options=options,
        libraries=report_libraries(),
    )
    return report_input, render(report_input)


def write_bundle(
    outcome: StudyOutcome,
    data: Path,
    spec: FeatureSpec,
    registry: Path,
    options: StudyOptions,
    started: float,
) -> BundleMetadata:
    """The report, then the bundle with the report files inside it."""
    from trainer.report import study_summary

    version = options.version or new_version(registry)
    report_input, files = build_report(outcome, data, spec, version, options, started)

    pipeline, dataset = outcome.pipeline, outcome.prepared.dataset
    classifier = pipeline[-1]
    evaluation = outcome.evaluation
    metadata: dict[str, Any] = {
        "version": version,
        "created_at": report_input.created_at,
        "estimator": type(classifier).__name__,
        "params": plain_params(classifier.get_params()),
        "spec": spec,
        "threshold": evaluation.threshold,
        "target_recall": options.target_recall,
        "metrics": evaluation.metrics,
        "data": dataset.fingerprint,
        "libraries": library_versions(),
        "canary": canary(pipeline, dataset, spec, outcome.prepared.split.test),
        "study": study_summary(report_input, report_input.latency),
    }
    return save_bundle(
        registry, pipeline, metadata, key=signing_key(), extra_files=files
    )


def train_report(
    data: Path,
    spec: FeatureSpec,
    dataset: Dataset,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    pipeline: Pipeline,
    version: str,
    options: StudyOptions,
) -> dict[str, bytes]:
    """The report of `python -m trainer train`: no comparison or tuning, the
    seed model on its stratified fit / threshold / test parts."""
    started = time.perf_counter()
    duplicates = int(_duplicated(dataset, spec).sum())
    prepared = Prepared(
        dataset=dataset,
        split=Split(*parts, time_ordered=False),
        file_rows=len(dataset.y),
        duplicates=duplicates,
        duplicates_removed=False,
    )
    evaluation = evaluate_model(pipeline, prepared, options)
    outcome = StudyOutcome(
        prepared=prepared,
        selection=None,
        tuning=None,
        served=type(pipeline[-1]).__name__,
        params={},
        pipeline=pipeline,
        evaluation=evaluation,
        timings={"train_and_evaluate": time.perf_counter() - started},
    )
    return build_report(outcome, data, spec, version, options, started)[1]


def explain_latency(
    pipeline: Pipeline, spec: FeatureSpec, X: pd.DataFrame
) -> dict[str, float]:
    """Per-event cost of the explanations the scorer adds (1,000 events, 1 thread)."""
    explainer = Explainer(pipeline, spec)
    prepared = pipeline[:-1].transform(X.iloc[: min(1_000, len(X))])
    with threadpool_limits(1):
        explainer.explain(prepared[:10])
        started = time.perf_counter()
        explainer.explain(prepared)
    return {"explain_batch_us": (time.perf_counter() - started) / len(prepared) * 1e6}


def report_libraries() -> dict[str, str]:
    import matplotlib
    import shap

    return {
        **library_versions(),
        "shap": shap.__version__,
        "matplotlib": matplotlib.__version__,
    }

"""Model selection: the same pipeline around five classifiers, compared honestly.

Each candidate is scored by stratified cross-validation (ROC AUC and PR AUC,
mean and spread over folds), by a time-ordered hold-out (fit on the past, score
the next period) and by its scoring latency. Fits run two at a time, each with
one native thread, so two processes never fight over the two cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from sklearn.ensemble import (
    AdaBoostClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from trainer.pipeline import build_pipeline, default_classifier
from trainer.progress import Progress
from txrisk.errors import DataError, UserError
from txrisk.explain import is_explainable
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

# Classic gradient boosting, random forests and AdaBoost cost 5-40x the fit time
# of histogram boosting; above this many rows they are compared on a stratified
# subsample so that the whole study fits in minutes on two cores.
SLOW_MODEL_ROWS = 30_000
N_JOBS = 2
SINGLE_EVENT_CALLS = 100
BATCH_SIZE = 1_000


@dataclass(frozen=True)
class Candidate:
    name: str
    label: str
    make: Callable[[int], Any]
    slow: bool


CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        "logreg",
        "logistic regression",
        lambda seed: LogisticRegression(max_iter=2000, random_state=seed),
        slow=False,
    ),
    Candidate(
        "forest",
        "random forest (100 trees, min leaf 5)",
        lambda seed: RandomForestClassifier(
            n_estimators=100, min_samples_leaf=5, n_jobs=1, random_state=seed
        ),
        slow=True,
    ),
    Candidate(
        "gboost",
        "gradient boosting (100 trees, depth 3)",
        lambda seed: GradientBoostingClassifier(
            n_estimators=100, max_depth=3, random_state=seed
        ),
        slow=True,
    ),
    Candidate(
        "hgb",
        "histogram gradient boosting (seed model)",
        default_classifier,
        slow=False,
    ),
    Candidate(
        "adaboost",
        "AdaBoost (100 stumps)",
        lambda seed: AdaBoostClassifier(n_estimators=100, random_state=seed),
        slow=True,
    ),
)
CANDIDATE_NAMES = tuple(c.name for c in CANDIDATES)


def candidate(name: str) -> Candidate:
    for item in CANDIDATES:
        if item.name == name:
            return item
    raise UserError(
        f"--models {name}: unknown model; choose from {', '.join(CANDIDATE_NAMES)}"
    )


@dataclass(frozen=True)
class CandidateResult:
    """One row of the comparison table."""

    name: str
    label: str
    explainable: bool
    cv_rows: int
    folds: int
    roc_auc_mean: float
    roc_auc_std: float
    pr_auc_mean: float
    pr_auc_std: float
    holdout_roc_auc: float
    holdout_pr_auc: float
    holdout_fit_rows: int
    fit_seconds: float
    single_p50_ms: float
    single_p95_ms: float
    batch_p50_us: float
    batch_p95_us: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    results: list[CandidateResult]
    winner: str
    served: str
    seconds: float
    time_ordered: bool
    slow_rows: int


def compare(
    spec: FeatureSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    fit_rows: np.ndarray,
    valid_rows: np.ndarray,
    *,
    folds: int,
    seed: int,
    names: Sequence[str] = CANDIDATE_NAMES,
    slow_rows: int = SLOW_MODEL_ROWS,
    time_ordered: bool = True,
    latency_calls: int = SINGLE_EVENT_CALLS,
) -> Selection:
    """Compare the candidates on the development rows (fit + validation).

    1. cross-validate each candidate on the development rows (slow ones on a
       stratified subsample of at most `slow_rows`)
    2. fit each on `fit_rows` and score `valid_rows` (the later period when
       the split is time-ordered)
    3. measure scoring latency of the hold-out model, one native thread
    4. rank by mean cross-validated PR AUC: with fraud at a few percent it
       tracks what analysts see far better than ROC AUC
    """
    started = time.perf_counter()
    chosen = [candidate(name) for name in names]
    development = np.sort(np.concatenate([fit_rows, valid_rows]))

    tasks, plan = [], {}
    for item in chosen:
        cap = slow_rows if item.slow else None
        cv_rows = subsample(development, y, cap, seed)
        holdout_fit = subsample(fit_rows, y, cap, seed)
        plan[item.name] = (len(cv_rows), len(holdout_fit))
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fold, (train, test) in enumerate(splitter.split(cv_rows, y[cv_rows])):
            tasks.append((item, fold, cv_rows[train], cv_rows[test]))
        tasks.append((item, -1, holdout_fit, valid_rows))
    # Slow models first: the two workers then finish close together.
    tasks.sort(key=lambda task: (not task[0].slow, task[0].name, task[1]))

    progress = Progress("select", total_fits=len(tasks))
    scores: dict[str, list[tuple[int, float, float, float]]] = {}
    fitted: dict[str, Pipeline] = {}
    for name, fold, roc, ap, seconds, model in _run(spec, X, y, tasks, seed):
        scores.setdefault(name, []).append((fold, roc, ap, seconds))
        if model is not None:
            fitted[name] = model
        part = "hold-out" if fold < 0 else f"fold {fold + 1}"
        progress.advance(note=f"{name} {part}")

    results = []
    for item in chosen:
        rows = scores[item.name]
        cv = np.array([(roc, ap) for fold, roc, ap, _ in rows if fold >= 0])
        holdout = next(r for r in rows if r[0] < 0)
        latency = measure_latency(fitted[item.name], X.iloc[valid_rows], latency_calls)
        results.append(
            CandidateResult(
                name=item.name,
                label=item.label,
                explainable=is_explainable(item.make(seed)),
                cv_rows=plan[item.name][0],
                folds=folds,
                roc_auc_mean=float(cv[:, 0].mean()),
                roc_auc_std=float(cv[:, 0].std()),
                pr_auc_mean=float(cv[:, 1].mean()),
                pr_auc_std=float(cv[:, 1].std()),
                holdout_roc_auc=holdout[1],
                holdout_pr_auc=holdout[2],
                holdout_fit_rows=plan[item.name][1],
                fit_seconds=holdout[3],
                **latency,
            )
        )

    results.sort(key=lambda r: r.pr_auc_mean, reverse=True)
    explainable = [r for r in results if r.explainable]
    if not explainable:
        raise UserError(
            "--models: none of the chosen models can be explained in log-odds; "
            "include hgb, gboost or logreg"
        )
    selection = Selection(
        results=results,
        winner=results[0].name,
        served=explainable[0].name,
        seconds=time.perf_counter() - started,
        time_ordered=time_ordered,
        slow_rows=slow_rows,
    )
    logger.info(
        "selection done winner=%s served=%s seconds=%.1f",
        selection.winner,
        selection.served,
        selection.seconds,
    )
    return selection


def subsample(
    rows: np.ndarray, y: np.ndarray, cap: int | None, seed: int
) -> np.ndarray:
    """At most `cap` of `rows`, stratified on the label, in row order."""
    if cap is None or len(rows) <= cap:
        return rows
    kept, _ = train_test_split(
        rows, train_size=cap, stratify=y[rows], random_state=seed
    )
    return np.sort(kept)


def _run(
    spec: FeatureSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    tasks: list[tuple[Candidate, int, np.ndarray, np.ndarray]],
    seed: int,
) -> Iterator[tuple[str, int, float, float, float, Pipeline | None]]:
    jobs = (
        delayed(_fit_and_score)(
            spec,
            item.make(seed),
            item.name,
            fold,
            X.iloc[train],
            y[train],
            X.iloc[test],
            y[test],
        )
        for item, fold, train, test in tasks
    )
    # One native thread per worker: two workers x two OpenMP threads on two
    # cores is several times slower than either alone.
    with parallel_config(backend="loky", inner_max_num_threads=1):
        try:
            yield from Parallel(n_jobs=N_JOBS, return_as="generator_unordered")(jobs)
        except ValueError as exc:
            raise DataError(f"cross-validation failed: {exc}") from exc


def _fit_and_score(
    spec: FeatureSpec,
    classifier: Any,
    name: str,
    fold: int,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_test: pd.DataFrame,
    y_test: np.ndarray,
) -> tuple[str, int, float, float, float, Pipeline | None]:
    pipeline = build_pipeline(spec, classifier)
    started = time.perf_counter()
    pipeline.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    scores = pipeline.predict_proba(X_test)[:, 1]
    roc = float(roc_auc_score(y_test, scores))
    ap = float(average_precision_score(y_test, scores))
    # Only the hold-out model comes back: its latency is measured in the parent.
    return name, fold, roc, ap, seconds, pipeline if fold < 0 else None


def measure_latency(
    pipeline: Pipeline, X: pd.DataFrame, calls: int = SINGLE_EVENT_CALLS
) -> dict[str, float]:
    """p50/p95 of one-event calls (ms) and of the per-event cost in batches (us).

    One native thread, as the scorer runs; a few warm-up calls are discarded.
    """
    single: list[float] = []
    batch: list[float] = []
    with threadpool_limits(1):
        for i in range(3):
            pipeline.predict_proba(X.iloc[[i % len(X)]])
        for i in range(calls):
            row = X.iloc[[i % len(X)]]
            started = time.perf_counter()
            pipeline.predict_proba(row)
            single.append(time.perf_counter() - started)
        for i in range(max(2, calls // 10)):
            rows = np.arange(i * BATCH_SIZE, (i + 1) * BATCH_SIZE) % len(X)
            frame = X.iloc[rows]
            started = time.perf_counter()
            pipeline.predict_proba(frame)
            batch.append((time.perf_counter() - started) / BATCH_SIZE)
    return {
        "single_p50_ms": float(np.percentile(single, 50) * 1e3),
        "single_p95_ms": float(np.percentile(single, 95) * 1e3),
        "batch_p50_us": float(np.percentile(batch, 50) * 1e6),
        "batch_p95_us": float(np.percentile(batch, 95) * 1e6),
    }


def markdown_table(selection: Selection) -> str:
    """The comparison as a Markdown table, readable as plain text too."""
    holdout = "time-ordered hold-out" if selection.time_ordered else "random hold-out"
    header = (
        "| model | explainable | CV rows | CV ROC AUC | CV PR AUC "
        f"| {holdout} ROC AUC | {holdout} PR AUC | fit s "
        "| 1 event p50 / p95 ms | batch of 1,000 p50 / p95 us/event |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in selection.results:
        mark = " (winner)" if r.name == selection.winner else ""
        mark += " (served)" if r.name == selection.served else ""
        lines.append(
            f"| {r.name}{mark} | {'yes' if r.explainable else 'no'} | {r.cv_rows:,} "
            f"| {r.roc_auc_mean:.4f} ± {r.roc_auc_std:.4f} "
            f"| {r.pr_auc_mean:.4f} ± {r.pr_auc_std:.4f} "
            f"| {r.holdout_roc_auc:.4f} | {r.holdout_pr_auc:.4f} | {r.fit_seconds:.1f} "
            f"| {r.single_p50_ms:.1f} / {r.single_p95_ms:.1f} "
            f"| {r.batch_p50_us:.0f} / {r.batch_p95_us:.0f} |"
        )
    return "\n".join(lines)


def table_notes(selection: Selection) -> str:
    """What the table's columns mean and where the data for each came from."""
    first = selection.results[0]
    most = max(r.cv_rows for r in selection.results)
    slow = [r.name for r in selection.results if r.cv_rows < most]
    notes = [
        f"{first.folds}-fold stratified cross-validation on the development rows "
        "(everything before the test period); ± is the standard deviation over "
        "folds. Ranked by mean CV PR AUC.",
        "Hold-out: fit on the fit part, scored on the threshold part"
        + (" (the later period)." if selection.time_ordered else "."),
        "Latency: `predict_proba` of the whole pipeline with one native thread; "
        "explanations not included. Fit seconds: the hold-out fit, one thread.",
    ]
    if slow:
        notes.append(
            f"{', '.join(slow)}: compared on a stratified subsample of at most "
            f"{selection.slow_rows:,} rows (see CV rows) to keep the study affordable; "
            "with more rows they might score somewhat higher."
        )
    if selection.winner != selection.served:
        notes.append(
            f"The winner, {selection.winner}, cannot be explained in log-odds; the "
            f"bundle serves the best explainable model, {selection.served}."
        )
    return "\n".join(f"- {note}" for note in notes)

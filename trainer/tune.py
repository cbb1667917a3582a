"""Tuning: successive halving over the served model's main parameters.

`HalvingRandomSearchCV` draws candidates, scores them all on few rows, keeps
the best third, and repeats with three times the rows until the last round
runs on all development rows. Scoring is cross-validated PR AUC over the same
stratified folds as selection. Two workers with one native thread each keep
both cores busy without oversubscription.

Progress: each worker's scorer appends one line per finished fit to a file; a
thread in the parent reads it and prints fits done and the time left, weighted
by rows, since a last-round fit costs `factor**rounds` times a first-round one.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from math import ceil, floor, log, prod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.metrics import get_scorer
from sklearn.model_selection import HalvingRandomSearchCV, StratifiedKFold

from trainer.pipeline import build_pipeline
from trainer.progress import Progress
from trainer.select import N_JOBS, candidate
from txrisk.errors import DataError, UserError
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

METRIC = "average_precision"
# Each test fold in the first round should hold at least this many frauds, or
# its PR AUC is mostly noise and good candidates are dropped by chance.
MIN_FRAUD_PER_FOLD = 10

# Trees, depth, learning rate, minimum leaf size. Depth stops at 4 because the
# scorer explains every event, at a cost of about trees x leaves x depth^2.
SEARCH_SPACES: dict[str, dict[str, list[Any]]] = {
    "hgb": {
        "classify__max_iter": [100, 200, 300],
        "classify__max_depth": [2, 3, 4],
        "classify__learning_rate": [0.05, 0.1, 0.15, 0.25],
        "classify__min_samples_leaf": [20, 40, 100, 200],
    },
    "gboost": {
        "classify__n_estimators": [100, 200],
        "classify__max_depth": [2, 3, 4],
        "classify__learning_rate": [0.05, 0.1, 0.2],
        "classify__min_samples_leaf": [1, 20, 100],
    },
    "logreg": {
        "classify__C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
        "classify__class_weight": [None, "balanced"],
    },
}
# The seed model caps leaves at 6; tuning lets depth alone bound the tree.
BASE_OVERRIDES: dict[str, dict[str, Any]] = {
    "hgb": {"classify__max_leaf_nodes": None},
}


@dataclass(frozen=True)
class TuneResult:
    model: str
    metric: str
    best_params: dict[str, Any]
    best_score: float
    best_score_std: float
    rounds: list[dict[str, int]]
    candidates: int
    fits: int
    seconds: float
    top: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def halving_rounds(
    n_candidates: int, factor: int, min_resources: int, max_resources: int
) -> list[tuple[int, int]]:
    """(candidates, rows) per round, as `HalvingRandomSearchCV` will run them."""
    required = 1 + floor(log(n_candidates, factor))
    possible = 1 + floor(log(max_resources // min_resources, factor))
    rounds, left = [], n_candidates
    for index in range(min(required, possible)):
        rows = min(int(factor**index * min_resources), max_resources)
        rounds.append((left, rows))
        left = ceil(left / factor)
    return rounds


def tune(
    spec: FeatureSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    model: str,
    folds: int,
    seed: int,
    n_candidates: int = 12,
    factor: int = 3,
) -> TuneResult:
    """Search `model`'s space on (X, y) and return the best parameters.

    1. work out the rounds: the first as large as lets the last use every row,
       and never so small that a fold holds fewer than MIN_FRAUD_PER_FOLD frauds
    2. run the halving search, two workers, one native thread each
    3. report the best candidate of the last round and the five best overall
    """
    if model not in SEARCH_SPACES:
        raise UserError(
            f"--model {model}: no search space; tune one of {', '.join(SEARCH_SPACES)}"
        )
    space = SEARCH_SPACES[model]
    n_candidates = min(n_candidates, prod(len(v) for v in space.values()))

    fraud = min(int(y.sum()), int(len(y) - y.sum()))
    floor_rows = ceil(MIN_FRAUD_PER_FOLD * folds * len(y) / max(fraud, 1))
    required = 1 + floor(log(n_candidates, factor))
    min_rows = min(max(floor_rows, len(y) // factor ** (required - 1)), len(y))
    rounds = halving_rounds(n_candidates, factor, min_rows, len(y))
    total_fits = sum(c for c, _ in rounds) * folds
    # Halving subsamples test folds too: a round's fits test on `rows` in all.
    total_work = sum(c * r for c, r in rounds)

    pipeline = build_pipeline(spec, candidate(model).make(seed))
    pipeline.set_params(**BASE_OVERRIDES.get(model, {}))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="txrisk-tune-") as folder:
        log_file = Path(folder) / "fits"
        log_file.touch()
        search = HalvingRandomSearchCV(
            pipeline,
            space,
            n_candidates=n_candidates,
            factor=factor,
            resource="n_samples",
            min_resources=min_rows,
            max_resources=len(y),
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
            scoring=_LoggingScorer(METRIC, str(log_file)),
            refit=False,
            return_train_score=False,
            error_score="raise",
            n_jobs=N_JOBS,
            random_state=seed,
        )
        # Each logged fit is weighted by its test fold's rows, which grow with
        # the round's rows as the fit cost does.
        progress = Progress("tune", total_fits, total_work)
        monitor = _Monitor(log_file, progress)
        monitor.start()
        try:
            with parallel_config(backend="loky", inner_max_num_threads=1):
                search.fit(X, y)
        except ValueError as exc:
            raise DataError(f"tuning failed: {exc}") from exc
        finally:
            monitor.stop()
    seconds = time.perf_counter() - started

    return _result(search, model, rounds, seconds, folds)


def _result(
    search: HalvingRandomSearchCV,
    model: str,
    rounds: list[tuple[int, int]],
    seconds: float,
    folds: int,
) -> TuneResult:
    results = pd.DataFrame(search.cv_results_)
    last = results[results["iter"] == results["iter"].max()]
    best = last.loc[last["mean_test_score"].idxmax()]
    ranked = results.sort_values(["iter", "mean_test_score"], ascending=False).head(5)
    top = [
        {
            "round": int(row["iter"]) + 1,
            "rows": int(row["n_resources"]),
            "params": _short(row["params"]),
            "score": float(row["mean_test_score"]),
            "std": float(row["std_test_score"]),
        }
        for _, row in ranked.iterrows()
    ]
    score = float(best["mean_test_score"])
    logger.info("tuning done model=%s best=%.4f seconds=%.1f", model, score, seconds)
    return TuneResult(
        model=model,
        metric=METRIC,
        best_params=_short(best["params"]),
        best_score=score,
        best_score_std=float(best["std_test_score"]),
        rounds=[{"candidates": c, "rows": r} for c, r in rounds],
        candidates=len(results[results["iter"] == 0]),
        fits=len(results) * folds,
        seconds=seconds,
        top=top,
    )


def _short(params: dict[str, Any]) -> dict[str, Any]:
    """Parameter names without the pipeline step prefix, values as plain JSON."""
    out = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key.removeprefix("classify__")] = value
    return out


def pipeline_params(params: dict[str, Any], model: str) -> dict[str, Any]:
    """`TuneResult.best_params` back as pipeline parameters, with the base overrides."""
    return {
        **BASE_OVERRIDES.get(model, {}),
        **{f"classify__{key}": value for key, value in params.items()},
    }


class _LoggingScorer:
    """A scorer that also appends the test fold's size to a file, one line per fit.

    It runs inside the worker processes; O_APPEND writes of one short line
    never interleave, so the parent can count lines while the search runs.
    """

    def __init__(self, metric: str, path: str) -> None:
        self.metric = metric
        self.path = path

    def __call__(self, estimator: Any, X: pd.DataFrame, y: np.ndarray) -> float:
        score = float(get_scorer(self.metric)(estimator, X, y))
        with open(self.path, "a", encoding="ascii") as handle:
            handle.write(f"{len(X)}\n")
        return score


class _Monitor(threading.Thread):
    """Reads the fit log every half second and advances the progress lines."""

    def __init__(self, path: Path, progress: Progress) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.progress = progress
        self._stop_event = threading.Event()
        self._seen = 0

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self._poll()
        self._poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _poll(self) -> None:
        lines = self.path.read_text(encoding="ascii").splitlines()
        for line in lines[self._seen :]:
            if line.strip():
                self.progress.advance(work=int(line))
        self._seen = len(lines)

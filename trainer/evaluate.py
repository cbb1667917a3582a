"""Metrics that a fraud team acts on, the threshold that reaches a recall, and
the splits they are measured on (time-ordered when the data has times)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from txrisk.errors import DataError


def threshold_for_recall(y: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest threshold whose recall on (y, scores) is at least `target`.

    The highest such threshold flags the fewest legitimate payments while still
    catching the target share of fraud.
    """
    precision, recall, thresholds = precision_recall_curve(y, scores)
    # recall[i] belongs to thresholds[i]; the last recall (0) has no threshold.
    reaching = np.flatnonzero(recall[:-1] >= target)
    if reaching.size == 0:
        return float(thresholds[0])
    return float(thresholds[reaching[-1]])


def classification_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, float]:
    """ROC AUC, PR AUC and the confusion-matrix rates at `threshold`."""
    flagged = scores >= threshold
    tn, fp, fn, tp = confusion_matrix(y, flagged, labels=[0, 1]).ravel()

    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "pr_auc": float(average_precision_score(y, scores)),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
        "false_positive_rate": float(fp / (fp + tn)) if fp + tn else 0.0,
        "flag_rate": float(flagged.mean()),
        "true_positives": float(tp),
        "false_positives": float(fp),
        "true_negatives": float(tn),
        "false_negatives": float(fn),
    }


def operating_point(
    y: np.ndarray, scores: np.ndarray, target_recall: float
) -> dict[str, float]:
    """Precision and false positive rate where recall first reaches the target.

    The threshold is chosen on the same (y, scores), so this describes the curve
    (an in-sample operating point), not what a fixed threshold does later.
    """
    threshold = threshold_for_recall(y, scores, target_recall)
    metrics = classification_metrics(y, scores, threshold)
    return {
        "threshold": threshold,
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "false_positive_rate": metrics["false_positive_rate"],
    }


def precision_at_top(y: np.ndarray, scores: np.ndarray, share: float) -> float:
    """Share of fraud among the `share` highest-scoring rows (at least one row).

    What an analyst queue reviewing the top k% of payments would find.
    """
    count = max(1, int(round(share * len(scores))))
    top = np.argsort(-scores, kind="stable")[:count]
    return float(np.mean(y[top]))


def brier(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean squared error of the probabilities: lower is better calibrated."""
    return float(brier_score_loss(y, scores))


def calibration_table(
    y: np.ndarray, scores: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Observed fraud rate against mean predicted probability, quantile bins."""
    observed, predicted = calibration_curve(y, scores, n_bins=bins, strategy="quantile")
    return observed, predicted


@dataclass(frozen=True)
class Split:
    """Row positions of the fit, threshold and test parts.

    `time_ordered`: the parts follow each other in time (fit, then threshold,
    then test), so the test measures the model on a later period, as in
    production; otherwise they are stratified random draws.
    """

    fit: np.ndarray
    threshold: np.ndarray
    test: np.ndarray
    time_ordered: bool

    @property
    def development(self) -> np.ndarray:
        """Everything but the test part: where models are compared and tuned."""
        return np.sort(np.concatenate([self.fit, self.threshold]))


def time_ordered_split(
    timestamps: pd.Series, test_size: float, threshold_size: float
) -> Split:
    """Fit on the past, choose the threshold on the next period, test on the last.

    Each cut moves forward to the next new timestamp, so events sharing a time
    (one block, one second) never straddle it: every test row is strictly later
    than every fit and threshold row.
    """
    times = timestamps.to_numpy()
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    n = len(order)

    test_cut = _cut(ordered, int(round(n * (1.0 - test_size))))
    rest = test_cut
    threshold_cut = _cut(ordered, int(round(rest * (1.0 - threshold_size))))
    if not 0 < threshold_cut < test_cut < n:
        raise DataError(
            f"cannot split {n} rows by time into fit, threshold and test parts "
            "(too few distinct timestamps); use more data or a smaller --test-size"
        )
    return Split(
        fit=np.sort(order[:threshold_cut]),
        threshold=np.sort(order[threshold_cut:test_cut]),
        test=np.sort(order[test_cut:]),
        time_ordered=True,
    )


def _cut(ordered: np.ndarray, index: int) -> int:
    """The first position at or after `index` whose time differs from the one before."""
    index = min(max(index, 1), len(ordered))
    while index < len(ordered) and ordered[index] == ordered[index - 1]:
        index += 1
    return index


def stratified_split(
    y: np.ndarray, test_size: float, threshold_size: float, seed: int
) -> Split:
    """Random fit / threshold / test parts with the fraud rate of the whole."""
    rows = np.arange(len(y))
    try:
        rest, test = train_test_split(
            rows, test_size=test_size, stratify=y, random_state=seed
        )
        fit, threshold = train_test_split(
            rest, test_size=threshold_size, stratify=y[rest], random_state=seed
        )
    except ValueError as exc:
        raise DataError(f"cannot split the data ({exc})") from exc
    return Split(np.sort(fit), np.sort(threshold), np.sort(test), time_ordered=False)


def check_split(y: np.ndarray, split: Split) -> None:
    """Each part needs both classes, or its metrics and threshold mean nothing."""
    for name in ("fit", "threshold", "test"):
        part = y[getattr(split, name)]
        fraud = int(part.sum())
        if fraud == 0 or fraud == len(part):
            kind = "time-ordered" if split.time_ordered else "stratified"
            raise DataError(
                f"the {kind} {name} part ({len(part)} rows) holds a single class; "
                "use more data or another --test-size"
            )

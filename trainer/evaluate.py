"""Metrics that a fraud team acts on, and the threshold that reaches a recall."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
)


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

"""The report a person reads: report.md, the same as report.html, and PNG plots.

Everything is rendered in memory and handed to `save_bundle`, which writes it
into the bundle folder before the folder appears in the registry. Every plot is
read back with matplotlib before it is handed over, so a broken image fails the
training run instead of the reader.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import markdown
import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from trainer.importance import Example  # noqa: E402
from trainer.progress import duration  # noqa: E402
from trainer.select import Selection, markdown_table, table_notes  # noqa: E402
from trainer.tune import TuneResult  # noqa: E402
from txrisk.spec import FeatureSpec  # noqa: E402

if TYPE_CHECKING:
    from trainer.study import Evaluation, Prepared, StudyOptions

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 110
SECTIONS = (
    "Summary",
    "Data",
    "Model comparison",
    "Tuning",
    "Validation",
    "Curves",
    "Score distribution",
    "Threshold",
    "Calibration",
    "Feature importance",
    "Example explanations",
    "Reproducibility",
)


@dataclass(frozen=True)
class ReportInput:
    version: str
    created_at: datetime
    source: str
    spec: FeatureSpec
    estimator: str
    prepared: Prepared
    selection: Selection | None
    tuning: TuneResult | None
    evaluation: Evaluation
    target_recall: float
    importance: pd.DataFrame
    importance_kind: str
    examples: list[Example]
    latency: dict[str, float]
    timings: dict[str, float]
    started: float
    options: StudyOptions
    libraries: dict[str, str]


def render(report: ReportInput) -> dict[str, bytes]:
    """report.md, report.html and the PNGs they show, by file name.

    Adds `report` and `total` to `report.timings` before writing the text, so
    the stated study time covers everything but writing the files.
    """
    started = time.perf_counter()
    plots = {
        "roc.png": _roc(report),
        "pr.png": _pr(report),
        "scores.png": _scores(report),
        "threshold.png": _threshold(report),
        "calibration.png": _calibration(report),
        "confusion.png": _confusion(report),
        "importance.png": _importance(report),
    }
    if report.selection is not None:
        plots["comparison.png"] = _comparison(report.selection)
    for name, content in plots.items():
        check_png(content, name)
    report.timings["report"] = time.perf_counter() - started
    report.timings["total"] = time.perf_counter() - report.started

    text = markdown_text(report)
    return {
        "report.md": text.encode("utf-8"),
        "report.html": html_text(text, f"Model {report.version}").encode("utf-8"),
        **plots,
    }


def check_png(content: bytes, name: str) -> None:
    """A plot must be a PNG that matplotlib reads back with real pixels."""
    if not content.startswith(PNG_SIGNATURE):
        raise RuntimeError(f"{name}: not a PNG")
    image = mpimg.imread(io.BytesIO(content), format="png")
    if image.ndim != 3 or min(image.shape[:2]) < 100 or float(image.std()) == 0.0:
        raise RuntimeError(f"{name}: blank or tiny image {image.shape}")


def html_text(text: str, title: str) -> str:
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>"
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em}"
        "img{max-width:100%}</style></head><body>\n"
        f"{body}\n</body></html>\n"
    )


# ---------------------------------------------------------------- markdown


def markdown_text(r: ReportInput) -> str:
    parts = [
        f"# Model report {r.version}\n",
        f"{r.estimator} on `{r.source}` (spec `{r.spec.name}`), written "
        f"{r.created_at:%Y-%m-%d %H:%M} UTC.\n",
        _summary(r),
        _data(r),
        _comparison_section(r),
        _tuning(r),
        _validation(r),
        "## Curves\n\nOn the test part"
        + (" (the latest period)" if r.prepared.split.time_ordered else "")
        + ", and on the threshold part the threshold was chosen on.\n\n"
        "![ROC curve](roc.png)\n\n![Precision-recall curve](pr.png)\n",
        "## Score distribution\n\nTest-part fraud probabilities, fraud against "
        "legitimate (densities, log scale), with the threshold.\n\n"
        "![Score distribution](scores.png)\n",
        _threshold_section(r),
        _calibration_section(r),
        _importance_section(r),
        _examples_section(r),
        _reproducibility(r),
    ]
    return "\n".join(parts)


def _summary(r: ReportInput) -> str:
    m = r.evaluation.metrics
    where = "time-ordered test period" if r.prepared.split.time_ordered else "test part"
    total = r.timings.get("total")
    took = f" The study took {duration(total)} ({total:.0f} s)." if total else ""
    return (
        "## Summary\n\n"
        f"Threshold {r.evaluation.threshold:.4f}, chosen to reach "
        f"{r.target_recall:.0%} recall on the threshold part. On the {where} "
        f"({int(m['test_rows']):,} rows, fraud rate {m['test_fraud_rate']:.2%}) it "
        f"flags {m['flag_rate']:.2%} of payments with precision {m['precision']:.3f}, "
        f"recall {m['recall']:.3f} and false positive rate "
        f"{m['false_positive_rate']:.4f}; ROC AUC {m['roc_auc']:.4f}, PR AUC "
        f"{m['pr_auc']:.4f}. These are the figures to act on.{took}\n"
        + _prevalence_note(r)
    )


def _prevalence_note(r: ReportInput) -> str:
    """A warning when the test period's fraud rate is far from the past's.

    Precision, PR AUC and top-k precision scale with the fraud rate; ROC AUC
    and the false positive rate do not, so they are the ones to compare.
    """
    y, split = r.prepared.dataset.y, r.prepared.split
    past, test = float(y[split.development].mean()), float(y[split.test].mean())
    ratio = max(past, test) / max(min(past, test), 1e-12)
    if ratio < 1.5:
        return ""
    return (
        f"\n**Fraud rate shift**: {test:.2%} in the test period against {past:.2%} "
        f"before it ({ratio:.1f}x). Precision, PR AUC and top-k precision scale "
        "with the fraud rate, so on the test period they are not comparable with "
        "the cross-validated ones; compare ROC AUC and the false positive rate, "
        "which do not. The probabilities, fitted to the earlier rate, are off too "
        "(see Calibration).\n"
    )


def _period(r: ReportInput, rows: np.ndarray) -> str:
    times = r.prepared.dataset.timestamps
    if times is None:
        return "random draw"
    part = times.iloc[rows]
    return f"{part.min():%Y-%m-%d %H:%M} to {part.max():%Y-%m-%d %H:%M}"


def _data(r: ReportInput) -> str:
    p = r.prepared
    fp = p.dataset.fingerprint
    y = p.dataset.y
    if p.duplicates_removed:
        dupes = (
            f"{p.duplicates:,} rows were exact duplicates of an earlier row (every "
            "field, label and time); they were dropped before splitting, since a "
            "copy on each side of a random split grades the model on rows it "
            "memorised."
        )
    elif p.duplicates:
        dupes = (
            f"{p.duplicates:,} exact duplicate rows were kept (--keep-duplicates): "
            "cross-validated figures are optimistic."
        )
    else:
        dupes = "No exact duplicate rows."
    lines = [
        "## Data\n",
        f"- file `{fp.source}`: {fp.rows:,} rows, fraud rate {fp.fraud_rate:.2%}, "
        f"sha256 `{fp.sha256[:16]}…`",
        f"- studied: {len(y):,} rows, fraud rate {y.mean():.2%}. {dupes}",
        f"- fields: numeric {', '.join(r.spec.numeric) or '-'}; categorical "
        f"{', '.join(r.spec.categorical) or '-'}",
        "",
        "| part | rows | fraud | fraud rate | period |",
        "|---|---|---|---|---|",
    ]
    for name, rows in (
        ("fit", p.split.fit),
        ("threshold", p.split.threshold),
        ("test", p.split.test),
    ):
        part = y[rows]
        lines.append(
            f"| {name} | {len(rows):,} | {int(part.sum()):,} | {part.mean():.2%} "
            f"| {_period(r, rows)} |"
        )
    how = (
        "Split by time: every test row is later than every fit and threshold row."
        if p.split.time_ordered
        else "The data has no timestamp: the parts are stratified random draws."
    )
    lines += ["", how + " Comparison and tuning used fit + threshold only.\n"]
    return "\n".join(lines)


def _comparison_section(r: ReportInput) -> str:
    if r.selection is None:
        return (
            "## Model comparison\n\nNot run: `python -m trainer train` fits the "
            "seed model; `python -m trainer study` compares models.\n"
        )
    s = r.selection
    return (
        "## Model comparison\n\n"
        f"{markdown_table(s)}\n\n{table_notes(s)}\n"
        f"- Took {duration(s.seconds)}.\n\n"
        "![Model comparison](comparison.png)\n"
    )


def _tuning(r: ReportInput) -> str:
    t = r.tuning
    if t is None:
        return "## Tuning\n\nNot run: the served model keeps its default parameters.\n"
    rounds = ", ".join(f"{x['candidates']} on {x['rows']:,} rows" for x in t.rounds)
    params = ", ".join(f"`{k}={v}`" for k, v in t.best_params.items())
    lines = [
        "## Tuning\n",
        f"Successive halving (`HalvingRandomSearchCV`, factor 3) over {t.model}'s "
        f"trees, depth, learning rate and minimum leaf size: {t.candidates} "
        f"candidates, rounds {rounds}; {t.fits} fits in {duration(t.seconds)} on "
        f"two workers. Metric: cross-validated PR AUC on the development part.\n",
        f"Best: {params} with PR AUC {t.best_score:.4f} ± {t.best_score_std:.4f}.",
    ]
    if r.selection is not None:
        base = next(x for x in r.selection.results if x.name == t.model)
        cv = r.evaluation.cv
        # Both on every development row and the same stratified folds (slow
        # models excepted: they were compared on a subsample).
        if base.cv_rows == int(cv["rows"]):
            delta = cv["pr_auc_mean"] - base.pr_auc_mean
            lines.append(
                f"On all {base.cv_rows:,} development rows and the comparison's "
                f"folds: tuned PR AUC {cv['pr_auc_mean']:.4f} ± "
                f"{cv['pr_auc_std']:.4f}, untuned {base.pr_auc_mean:.4f} ± "
                f"{base.pr_auc_std:.4f} ({delta:+.4f} from tuning; compare it "
                "with the spread over folds)."
            )
    lines += [
        "",
        "| round | rows | parameters | CV PR AUC |",
        "|---|---|---|---|",
    ]
    for row in t.top:
        shown = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        lines.append(
            f"| {row['round']} | {row['rows']:,} | {shown} "
            f"| {row['score']:.4f} ± {row['std']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def result_table(ev: Evaluation, time_ordered: bool, target_recall: float) -> str:
    """CV against the held-out test: the table to quote when comparing runs."""
    m, cv = ev.metrics, ev.cv
    where = "time-ordered test" if time_ordered else "random test"
    pct = f"{target_recall:.0%}"
    return "\n".join(
        [
            f"| validation | ROC AUC | PR AUC | precision at {pct} recall "
            "| FPR there | recall at the threshold |",
            "|---|---|---|---|---|---|",
            f"| {int(cv['folds'])}-fold stratified CV (development part) "
            f"| {cv['roc_auc_mean']:.4f} ± {cv['roc_auc_std']:.4f} "
            f"| {cv['pr_auc_mean']:.4f} ± {cv['pr_auc_std']:.4f} "
            f"| {cv['precision_at_recall_mean']:.4f} ± "
            f"{cv['precision_at_recall_std']:.4f} "
            f"| {cv['fpr_at_recall_mean']:.4f} ± {cv['fpr_at_recall_std']:.4f} "
            "| (threshold per fold) |",
            f"| {where}, threshold chosen beforehand | {m['roc_auc']:.4f} "
            f"| {m['pr_auc']:.4f} | {m['precision']:.4f} "
            f"| {m['false_positive_rate']:.4f} | {m['recall']:.4f} |",
            f"| {where}, threshold set on the test curve itself | {m['roc_auc']:.4f} "
            f"| {m['pr_auc']:.4f} | {ev.test_curve_point['precision']:.4f} "
            f"| {ev.test_curve_point['false_positive_rate']:.4f} "
            f"| {ev.test_curve_point['recall']:.4f} |",
        ]
    )


def _validation(r: ReportInput) -> str:
    m = r.evaluation.metrics
    tn, fp = int(m["true_negatives"]), int(m["false_positives"])
    fn, tp = int(m["false_negatives"]), int(m["true_positives"])
    return "\n".join(
        [
            "## Validation\n",
            result_table(r.evaluation, r.prepared.split.time_ordered, r.target_recall),
            "",
            "- CV: stratified folds on the development part; precision and FPR at "
            "the point where each fold's own curve reaches the target recall.",
            "- Test, threshold chosen beforehand: the threshold from the threshold "
            f"part (where it reached recall {m['threshold_part_recall']:.3f}) applied "
            "unchanged: what production would have seen.",
            "- Test, threshold on its own curve: the best the model could do on "
            "that period, for comparison only.",
            f"- Precision in the top {m['top_share']:.0%} of test scores: "
            f"{m['precision_top_share']:.4f} (what a review queue of that size "
            "would find).",
            "",
            "Confusion matrix on the test part at the threshold:\n",
            "| | flagged | not flagged |",
            "|---|---|---|",
            f"| fraud | {tp:,} (true positives) | {fn:,} (missed) |",
            f"| legitimate | {fp:,} (false alarms) | {tn:,} |",
            "",
            "![Confusion matrix](confusion.png)\n",
        ]
    )


def _threshold_section(r: ReportInput) -> str:
    return (
        "## Threshold\n\n"
        f"Precision and recall on the test part against the threshold; the dashed "
        f"line is the chosen threshold {r.evaluation.threshold:.4f}, the dotted one "
        f"the target recall {r.target_recall:.0%}.\n\n"
        "![Precision and recall against the threshold](threshold.png)\n"
    )


def _calibration_section(r: ReportInput) -> str:
    c = r.evaluation.calibration
    verdict = (
        f"{c['best']} calibration lowers the Brier score from "
        f"{c['uncalibrated']:.5f} to {c[c['best']]:.5f}"
        if c["helped"]
        else f"neither calibrator lowers the Brier score ({c['uncalibrated']:.5f})"
    )
    return (
        "## Calibration\n\n"
        "Calibrators fitted on the threshold part, Brier scores on the test part "
        "(lower is better):\n\n"
        "| probabilities | Brier score |\n|---|---|\n"
        + "".join(
            f"| {name} | {c[name]:.5f} |\n"
            for name in ("uncalibrated", "isotonic", "sigmoid")
        )
        + f"\nOn this data {verdict}. The served model is **uncalibrated**: its "
        "probabilities are the model's own, so each published explanation "
        "(contributions plus base value) adds up exactly to the logit of the "
        "published probability. Calibration is reported, not served.\n\n"
        "![Calibration](calibration.png)\n"
    )


def _importance_section(r: ReportInput) -> str:
    lines = [
        "## Feature importance\n",
        f"Per input field (one-hot columns folded back). Model-based: "
        f"{r.importance_kind}, shares of the total. Permutation: drop in PR AUC on "
        "the test part when the field is shuffled (mean ± sd of 5 repeats). "
        "Mean |contribution|: average size of the field's log-odds term in the "
        "explanations.\n",
        f"| field | {r.importance_kind} | permutation (PR AUC drop) "
        "| mean abs contribution |",
        "|---|---|---|---|",
    ]
    for name, row in r.importance.iterrows():
        lines.append(
            f"| {name} | {row['model_based']:.3f} "
            f"| {row['permutation_mean']:.4f} ± {row['permutation_std']:.4f} "
            f"| {row['mean_abs_contribution']:.3f} |"
        )
    lines.append("\n![Feature importance](importance.png)\n")
    return "\n".join(lines)


def _examples_section(r: ReportInput) -> str:
    lines = [
        "## Example explanations\n",
        "Flagged test events: the highest-scoring caught frauds, then the "
        "highest-scoring false alarms. Contributions are in log-odds, positive "
        "towards fraud, exactly what the scorer publishes.\n",
        "| event | probability | truth | top fields (value: contribution) |",
        "|---|---|---|---|",
    ]
    if not r.examples:
        lines.append("| (no event flagged) | | | |")
    for ex in r.examples:
        shown = "; ".join(
            f"{name}={_value(ex.values.get(name))}: {value:+.2f}"
            for name, value in ex.contributions
        )
        truth = "fraud" if ex.is_fraud else "legitimate (false alarm)"
        lines.append(f"| {ex.tx_id} | {ex.probability:.3f} | {truth} | {shown} |")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _reproducibility(r: ReportInput) -> str:
    o, lat = r.options, r.latency
    options = (
        f"folds {o.folds}, seed {o.seed}, target recall {o.target_recall}, "
        f"test size {o.test_size}, threshold size {o.threshold_size}"
    )
    if r.selection is not None:
        options += f", models {', '.join(o.models)}, tuning " + (
            f"on ({o.candidates} candidates)" if o.tune else "off"
        )
    else:
        options += " (`train`: the seed model on stratified parts)"
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in r.timings.items())
    # Other work on the machine slows every figure here; say how busy it was.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    libs = ", ".join(f"{k} {v}" for k, v in sorted(r.libraries.items()))
    lines = [
        "## Reproducibility\n",
        f"- options: {options}",
        f"- time: {timing} (two cores; load average 1/5/15 min at the end: {load})",
        f"- served model latency, one thread: one event p50 "
        f"{lat['single_p50_ms']:.1f} ms, p95 {lat['single_p95_ms']:.1f} ms; in "
        f"batches of 1,000 {lat['batch_p50_us']:.0f} us per event; explanations "
        f"add {lat['explain_batch_us']:.0f} us per event",
        f"- libraries: {libs}",
        "- parameters, threshold, metrics and the data fingerprint are in "
        "`metadata.json` beside this report",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- plots


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _parts(r: ReportInput) -> list[tuple[str, np.ndarray, np.ndarray]]:
    split, y = r.prepared.split, r.prepared.dataset.y
    test = "test (later period)" if split.time_ordered else "test"
    return [
        (test, y[split.test], r.evaluation.test_scores),
        ("threshold part", y[split.threshold], r.evaluation.threshold_scores),
    ]


def _roc(r: ReportInput) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, y, scores in _parts(r):
        fpr, tpr, _ = roc_curve(y, scores)
        ax.plot(fpr, tpr, label=label)
    m = r.evaluation.metrics
    ax.plot(m["false_positive_rate"], m["recall"], "ko", label="threshold on test")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="recall (true positive rate)")
    ax.set_title(f"ROC, test AUC {m['roc_auc']:.4f}")
    ax.legend(loc="lower right")
    return _png(fig)


def _pr(r: ReportInput) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, y, scores in _parts(r):
        precision, recall, _ = precision_recall_curve(y, scores)
        ax.plot(recall, precision, label=label)
    m = r.evaluation.metrics
    ax.plot(m["recall"], m["precision"], "ko", label="threshold on test")
    ax.axhline(m["test_fraud_rate"], color="grey", lw=0.8, ls=":", label="fraud rate")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    ax.set_title(f"Precision-recall, test PR AUC {m['pr_auc']:.4f}")
    ax.legend(loc="lower left")  # PR curves start top left and end bottom right
    return _png(fig)


def _scores(r: ReportInput) -> bytes:
    y, scores = _parts(r)[0][1:]
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 51).tolist()
    ax.hist(scores[y == 0], bins=bins, density=True, alpha=0.6, label="legitimate")
    ax.hist(scores[y == 1], bins=bins, density=True, alpha=0.6, label="fraud")
    ax.axvline(r.evaluation.threshold, color="k", ls="--", label="threshold")
    ax.set_yscale("log")
    ax.set(xlabel="fraud probability", ylabel="density (log)")
    ax.set_title("Scores on the test part")
    ax.legend()
    return _png(fig)


def _threshold(r: ReportInput) -> bytes:
    y, scores = _parts(r)[0][1:]
    precision, recall, thresholds = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(thresholds, precision[:-1], label="precision")
    ax.plot(thresholds, recall[:-1], label="recall")
    ax.axvline(r.evaluation.threshold, color="k", ls="--", label="chosen threshold")
    ax.axhline(r.target_recall, color="grey", ls=":", label="target recall")
    ax.set_xscale("log")
    ax.set(xlabel="threshold (log)", ylabel="share", ylim=(0, 1.02))
    ax.set_title("Precision and recall against the threshold (test part)")
    ax.legend(loc="lower left")
    return _png(fig)


def _calibration(r: ReportInput) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (observed, predicted) in r.evaluation.calibration_curves.items():
        brier = r.evaluation.calibration[name]
        ax.plot(predicted, observed, "o-", ms=3, label=f"{name} (Brier {brier:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate")
    ax.set_title("Calibration on the test part (quantile bins)")
    ax.legend(loc="upper left")
    return _png(fig)


def _confusion(r: ReportInput) -> bytes:
    m = r.evaluation.metrics
    cells = np.array(
        [
            [m["true_positives"], m["false_negatives"]],
            [m["false_positives"], m["true_negatives"]],
        ]
    )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(np.log1p(cells), cmap="Blues")
    for (i, j), value in np.ndenumerate(cells):
        shade = "white" if np.log1p(value) > np.log1p(cells).max() / 2 else "black"
        ax.text(j, i, f"{int(value):,}", ha="center", va="center", color=shade)
    ax.set_xticks([0, 1], ["flagged", "not flagged"])
    ax.set_yticks([0, 1], ["fraud", "legitimate"])
    ax.set_title(f"Test part at threshold {r.evaluation.threshold:.4f}")
    return _png(fig)


def _importance(r: ReportInput) -> bytes:
    table = r.importance.iloc[::-1]
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.45 * len(table) + 1.5), sharey=True)
    axes[0].barh(table.index, table["model_based"])
    axes[0].set_title(r.importance_kind)
    axes[1].barh(table.index, table["permutation_mean"], xerr=table["permutation_std"])
    axes[1].set_title("permutation (PR AUC drop)")
    axes[2].barh(table.index, table["mean_abs_contribution"])
    axes[2].set_title("mean |contribution| (log-odds)")
    return _png(fig)


def _comparison(selection: Selection) -> bytes:
    results = selection.results[::-1]
    names = [x.name for x in results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(results) + 1.5), sharey=True)
    axes[0].barh(
        names,
        [x.roc_auc_mean for x in results],
        xerr=[x.roc_auc_std for x in results],
    )
    axes[0].set_title("CV ROC AUC")
    axes[0].set_xlim(min(x.roc_auc_mean for x in results) - 0.05, 1)
    axes[1].barh(
        names, [x.pr_auc_mean for x in results], xerr=[x.pr_auc_std for x in results]
    )
    axes[1].set_title("CV PR AUC")
    return _png(fig)


# ------------------------------------------------------------- metadata


def study_summary(r: ReportInput, latency: dict[str, float]) -> dict[str, Any]:
    """What the bundle's metadata keeps of the study (JSON values only)."""
    p, ev = r.prepared, r.evaluation
    selection = None
    if r.selection is not None:
        selection = {
            "winner": r.selection.winner,
            "served": r.selection.served,
            "seconds": r.selection.seconds,
            "slow_model_rows": r.selection.slow_rows,
            "results": [x.as_dict() for x in r.selection.results],
        }
    return {
        "split": {
            "time_ordered": p.split.time_ordered,
            "fit_rows": len(p.split.fit),
            "threshold_rows": len(p.split.threshold),
            "test_rows": len(p.split.test),
        },
        "rows_studied": len(p.dataset.y),
        "duplicates": p.duplicates,
        "duplicates_removed": p.duplicates_removed,
        "selection": selection,
        "tuning": r.tuning.as_dict() if r.tuning else None,
        "cross_validation": ev.cv,
        "test_curve_at_target_recall": ev.test_curve_point,
        "calibration": ev.calibration,
        "importance": {
            "kind": r.importance_kind,
            "fields": r.importance.reset_index().to_dict(orient="records"),
        },
        "latency": latency,
        "timings_seconds": r.timings,
        "libraries": r.libraries,
    }

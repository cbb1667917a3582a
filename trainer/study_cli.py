"""The `select`, `tune` and `study` subcommands of `python -m trainer`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.progress import duration
from txrisk.cli import fraction, non_negative_int, positive_int
from txrisk.errors import UserError
from txrisk.spec import BUILTIN_SPECS, load_spec

if TYPE_CHECKING:
    from trainer.study import StudyOptions

SPEC_HELP = (
    f"feature spec: a TOML file or a built-in name ({', '.join(BUILTIN_SPECS)}); "
    "default gateway"
)
MODEL_NAMES = ("logreg", "forest", "gboost", "hgb", "adaboost")
TUNABLE = ("hgb", "gboost", "logreg")


def fold_count(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {text}")
    return value


def model_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model {', '.join(unknown) or '(none)'}; choose from "
            f"{','.join(MODEL_NAMES)}"
        )
    return names


def add_study_commands(commands: argparse._SubParsersAction) -> None:
    """Register `select`, `tune` and `study` on the trainer's subcommands."""
    select = commands.add_parser(
        "select",
        help="compare five classifiers by CV ROC/PR AUC and scoring latency",
        description="Compare logistic regression, random forest, gradient boosting, "
        "histogram gradient boosting and AdaBoost inside the same pipeline on the "
        "part of the data before the test period: stratified cross-validated ROC "
        "AUC and PR AUC (mean and spread), a time-ordered hold-out, and scoring "
        "latency. Prints the table.",
    )
    _data_flags(select)
    select.add_argument(
        "--out", type=Path, default=None, help="also write the table to this .md file"
    )
    select.set_defaults(command=_select)

    tune = commands.add_parser(
        "tune",
        help="successive-halving search over a model's main parameters",
        description="Tune trees, depth, learning rate and minimum leaf size of the "
        "chosen model with HalvingRandomSearchCV on two workers, scored by "
        "cross-validated PR AUC, with progress lines and an ETA.",
    )
    _data_flags(tune)
    tune.add_argument(
        "--model",
        choices=("auto", *TUNABLE),
        default="auto",
        help="model to tune; auto (default) runs the comparison first and tunes the "
        "best model the scorer can explain",
    )
    _tune_flags(tune)
    tune.set_defaults(command=_tune)

    study = commands.add_parser(
        "study",
        help="select + tune + train + evaluate, and write the bundle with its report",
        description="The full study: compare the candidates, tune the best "
        "explainable one, fit it, choose the threshold reaching the target recall "
        "on held-out data, test it on the latest period, and write "
        "DIR/<version>/ with model.joblib, metadata.json, report.md, report.html "
        "and the plots.",
    )
    _data_flags(study)
    _tune_flags(study)
    study.add_argument(
        "--model-dir", type=Path, required=True, help="the model registry folder"
    )
    study.add_argument(
        "--version", default=None, help="version name (default: UTC time)"
    )
    study.add_argument(
        "--target-recall",
        type=fraction,
        default=0.9,
        help="recall the threshold must reach on held-out data (default 0.9)",
    )
    study.add_argument(
        "--top-share",
        type=fraction,
        default=0.01,
        help="report precision in this top share of scores (default 0.01 = 1%%)",
    )
    study.add_argument(
        "--no-tune", action="store_true", help="skip tuning; serve default parameters"
    )
    study.set_defaults(command=_study)


def _data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help=".csv, .csv.gz or .parquet"
    )
    parser.add_argument("--spec", default=None, help=SPEC_HELP)
    parser.add_argument(
        "--folds", type=fold_count, default=5, help="cross-validation folds (default 5)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument(
        "--test-size",
        type=fraction,
        default=0.2,
        help="share kept for the final test: the latest period when the data has "
        "a timestamp (default 0.2)",
    )
    parser.add_argument(
        "--models",
        type=model_list,
        default=MODEL_NAMES,
        help=f"comma-separated candidates (default {','.join(MODEL_NAMES)})",
    )
    parser.add_argument(
        "--slow-rows",
        type=positive_int,
        default=30_000,
        help="compare forest, gboost and adaboost on a stratified subsample of at "
        "most this many rows (default 30000)",
    )
    parser.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep exact duplicate rows (default: drop them before splitting, as "
        "copies across folds inflate CV figures)",
    )


def _tune_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--candidates",
        type=positive_int,
        default=12,
        help="parameter sets drawn for successive halving (default 12)",
    )
    parser.add_argument(
        "--tune-rows",
        type=positive_int,
        default=100_000,
        help="tune on a stratified subsample of at most this many rows "
        "(default 100000)",
    )


def _options(args: argparse.Namespace, **extra: Any) -> StudyOptions:
    from trainer.study import StudyOptions

    return StudyOptions(
        folds=args.folds,
        seed=args.seed,
        test_size=args.test_size,
        models=args.models,
        slow_rows=args.slow_rows,
        keep_duplicates=args.keep_duplicates,
        candidates=getattr(args, "candidates", 12),
        tune_rows=getattr(args, "tune_rows", 100_000),
        **extra,
    )


def _select(args: argparse.Namespace) -> int:
    from trainer.select import markdown_table, table_notes
    from trainer.study import prepare, select_models

    spec = load_spec(args.spec)
    options = _options(args)
    prepared = prepare(args.data, spec, options)
    selection = select_models(spec, prepared, options)
    text = f"{markdown_table(selection)}\n\n{table_notes(selection)}\n"
    print(text)
    print(f"winner {selection.winner}; served (explainable) {selection.served}")
    if args.out is not None:
        try:
            args.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"--out {args.out}: cannot write it ({exc.strerror})"
            ) from exc
    return 0


def _tune(args: argparse.Namespace) -> int:
    from trainer.select import markdown_table
    from trainer.study import prepare, select_models, tune_model

    spec = load_spec(args.spec)
    options = _options(args)
    prepared = prepare(args.data, spec, options)
    model = args.model
    if model == "auto":
        selection = select_models(spec, prepared, options)
        print(markdown_table(selection) + "\n")
        model = selection.served
        if selection.winner != model:
            print(
                f"winner {selection.winner} cannot be explained in log-odds; tuning "
                f"the best explainable model, {model}"
            )
    result = tune_model(spec, prepared, options, model)
    params = ", ".join(f"{k}={v}" for k, v in result.best_params.items())
    print(
        f"best {model}: {params}\nCV PR AUC {result.best_score:.4f} ± "
        f"{result.best_score_std:.4f} "
        f"({result.fits} fits in {duration(result.seconds)})"
    )
    return 0


def _study(args: argparse.Namespace) -> int:
    from trainer.report import result_table
    from trainer.select import markdown_table
    from trainer.study import run_study

    started = time.perf_counter()
    spec = load_spec(args.spec)
    options = _options(
        args,
        target_recall=args.target_recall,
        top_share=args.top_share,
        tune=not args.no_tune,
        version=args.version,
    )
    outcome = run_study(args.data, spec, args.model_dir, options)
    assert outcome.metadata is not None
    if outcome.selection is not None:
        print(markdown_table(outcome.selection) + "\n")
        if outcome.selection.winner != outcome.served:
            print(
                f"winner {outcome.selection.winner} cannot be explained in log-odds; "
                f"serving the best explainable model, {outcome.served}\n"
            )
    if outcome.tuning is not None:
        params = ", ".join(f"{k}={v}" for k, v in outcome.tuning.best_params.items())
        print(f"tuned {outcome.served}: {params}\n")
    split = outcome.prepared.split
    print(result_table(outcome.evaluation, split.time_ordered, options.target_recall))
    folder = args.model_dir / outcome.metadata.version
    print(f"\nstudy took {duration(time.perf_counter() - started)}; bundle: {folder}")
    print(f"report: {folder / 'report.md'} (and report.html)")
    return 0

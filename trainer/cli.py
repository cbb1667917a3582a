"""`python -m trainer`: generate data, train models, write bundles."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from trainer.train import TrainOptions, train
from txrisk.cli import Parser, fraction, main_entry, non_negative_int, positive_int
from txrisk.errors import UserError
from txrisk.spec import BUILTIN_SPECS, load_spec

SPEC_HELP = (
    f"feature spec: a TOML file or a built-in name ({', '.join(BUILTIN_SPECS)}); "
    "default gateway"
)


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m trainer",
        description="Generate data, train fraud models and write model bundles.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="write synthetic crypto-gateway transactions",
        description="Write synthetic crypto-gateway payments with an is_fraud label "
        "(about 1%%). The same seed gives the same file.",
    )
    generate.add_argument("--rows", type=positive_int, required=True, help="how many rows")
    generate.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    generate.add_argument(
        "--out", type=Path, required=True, help="output file, .csv or .parquet"
    )
    generate.set_defaults(command=_generate)

    fit = commands.add_parser(
        "train",
        help="train the pipeline and write a model bundle",
        description="Train the seed pipeline on a labelled file, choose the threshold "
        "reaching the target recall, and write DIR/<version>/ with model.joblib "
        "and metadata.json.",
    )
    fit.add_argument("--data", type=Path, required=True, help=".csv, .csv.gz or .parquet")
    fit.add_argument("--spec", default=None, help=SPEC_HELP)
    fit.add_argument(
        "--model-dir", type=Path, required=True, help="the model registry folder"
    )
    fit.add_argument("--version", default=None, help="version name (default: UTC time)")
    fit.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    fit.add_argument(
        "--target-recall",
        type=fraction,
        default=0.9,
        help="recall the threshold must reach on held-out data (default 0.9)",
    )
    fit.add_argument(
        "--test-size", type=fraction, default=0.2, help="share held out for testing"
    )
    fit.set_defaults(command=_train)

    return parser


def _generate(args: argparse.Namespace) -> int:
    from trainer.generate import generate, write_table

    try:
        frame = generate(args.rows, args.seed)
        write_table(frame, args.out)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise UserError(f"--out {args.out}: cannot write it ({exc.strerror})") from exc
    print(f"wrote {len(frame)} rows to {args.out} (fraud rate {frame['is_fraud'].mean():.2%})")
    return 0


def _train(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    options = TrainOptions(
        seed=args.seed,
        test_size=args.test_size,
        target_recall=args.target_recall,
        version=args.version,
    )
    meta = train(args.data, spec, args.model_dir, options)
    m = meta.metrics
    print(
        f"version {meta.version}: ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}, "
        f"threshold {meta.threshold:.4f} -> precision {m['precision']:.3f} at "
        f"recall {m['recall']:.3f} on {int(m['test_rows'])} test rows"
    )
    print(f"bundle: {args.model_dir / meta.version}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry(build_parser, argv)

"""`python -m trainer`: generate data, train models, write bundles."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from trainer.registry import ControlTarget, describe, publish, stop_shadow
from trainer.study_cli import add_study_commands
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
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO (default), WARNING"
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="write synthetic crypto-gateway transactions",
        description="Write synthetic crypto-gateway payments with an is_fraud label "
        "(about 1%). The same seed gives the same file.",
    )
    generate.add_argument(
        "--rows", type=positive_int, required=True, help="how many rows"
    )
    generate.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed"
    )
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
    fit.add_argument(
        "--data", type=Path, required=True, help=".csv, .csv.gz or .parquet"
    )
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
    fit.add_argument(
        "--publish",
        action="store_true",
        help="announce the new version on the control topic (activate) when done",
    )
    fit.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write report.md, report.html and plots into the bundle (default on)",
    )
    _add_control_flags(fit)
    fit.set_defaults(command=_train)

    add_study_commands(commands)

    _add_registry_commands(commands)

    return parser


def _add_control_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS, default localhost:9092)",
    )
    parser.add_argument(
        "--control-topic",
        default=None,
        help="control topic (env TXRISK_CONTROL_TOPIC, default model-control)",
    )


def _add_registry_commands(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser(
        "publish",
        help="announce a version: every scorer verifies it and swaps to it",
        description="Announce a registry version on the control topic. Every scorer "
        "replica loads and verifies it beside its scoring loop and swaps between "
        "batches; a version failing a check is refused and the old one keeps serving.",
    )
    publish.add_argument("--model-dir", type=Path, required=True, help="the registry")
    publish.add_argument("--version", required=True, help="the version to activate")
    _add_control_flags(publish)
    publish.set_defaults(command=_publish)

    rollback = commands.add_parser(
        "rollback",
        help="announce an older version again",
        description="Activate an earlier version, announced like any other.",
    )
    rollback.add_argument("--model-dir", type=Path, required=True, help="the registry")
    rollback.add_argument("--to", required=True, help="the version to return to")
    _add_control_flags(rollback)
    rollback.set_defaults(command=_rollback)

    shadow = commands.add_parser(
        "shadow",
        help="score every event with a candidate too, publishing nothing from it",
        description="Announce a shadow candidate (--version) or stop shadowing "
        "(--stop). Its scores go to the shadow topic, if the scorers have one.",
    )
    shadow.add_argument("--model-dir", type=Path, required=False, help="the registry")
    which = shadow.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the candidate version")
    which.add_argument("--stop", action="store_true", help="stop shadow scoring")
    _add_control_flags(shadow)
    shadow.set_defaults(command=_shadow)

    models = commands.add_parser(
        "models",
        help="list the registry's versions, their metrics and the active one",
        description="List the versions in the registry with their metrics; the "
        "version last activated on the control topic is marked.",
    )
    models.add_argument("--model-dir", type=Path, required=True, help="the registry")
    models.add_argument(
        "--offline",
        action="store_true",
        help="do not ask Kafka which version is active",
    )
    _add_control_flags(models)
    models.set_defaults(command=_models)


def _control_target(args: argparse.Namespace) -> ControlTarget:
    from scorer.settings import ScorerSettings

    settings = ScorerSettings.load(
        bootstrap_servers=args.bootstrap_servers, control_topic=args.control_topic
    )
    return ControlTarget(settings.bootstrap_servers, settings.control_topic)


def _publish(args: argparse.Namespace) -> int:
    meta = publish(args.model_dir, args.version, _control_target(args), "activate")
    print(f"announced activate {meta.version} (sha256 {meta.model_sha256[:12]}…)")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    meta = publish(args.model_dir, args.to, _control_target(args), "activate")
    print(f"announced rollback to {meta.version} (sha256 {meta.model_sha256[:12]}…)")
    return 0


def _shadow(args: argparse.Namespace) -> int:
    target = _control_target(args)
    if args.stop:
        stop_shadow(target)
        print("announced unshadow")
        return 0
    if args.model_dir is None:
        raise UserError("--version needs --model-dir to check the candidate")
    meta = publish(args.model_dir, args.version, target, "shadow")
    print(f"announced shadow {meta.version}")
    return 0


def _models(args: argparse.Namespace) -> int:
    target = None if args.offline else _control_target(args)
    print(describe(args.model_dir, target))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from trainer.generate import generate, write_table

    try:
        frame = generate(args.rows, args.seed)
        write_table(frame, args.out)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise UserError(f"--out {args.out}: cannot write it ({exc.strerror})") from exc
    print(
        f"wrote {len(frame)} rows to {args.out} "
        f"(fraud rate {frame['is_fraud'].mean():.2%})"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    options = TrainOptions(
        seed=args.seed,
        test_size=args.test_size,
        target_recall=args.target_recall,
        version=args.version,
        report=args.report,
    )
    meta = train(args.data, spec, args.model_dir, options)
    m = meta.metrics
    print(
        f"version {meta.version}: ROC AUC {m['roc_auc']:.4f}, "
        f"PR AUC {m['pr_auc']:.4f}, "
        f"threshold {meta.threshold:.4f} -> precision {m['precision']:.3f} at "
        f"recall {m['recall']:.3f} on {int(m['test_rows'])} test rows"
    )
    print(f"bundle: {args.model_dir / meta.version}")
    if args.publish:
        publish(args.model_dir, meta.version, _control_target(args), "activate")
        print(f"announced activate {meta.version}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry(build_parser, argv)

"""`python -m scorer`: run the stream scorer, and the tools around it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from scorer import metrics
from scorer.control import ControlListener
from scorer.http import HttpServer
from scorer.models import ModelManager
from scorer.service import PublishFailed, ScorerService
from scorer.settings import SETTING_FLAGS, ScorerSettings
from txrisk.broker import TopicPlan, create_topics_sync
from txrisk.bundle import signing_key
from txrisk.cli import (
    Parser,
    fraction,
    main_entry,
    non_negative_float,
    non_negative_int,
    positive_int,
    share,
)
from txrisk.contracts import ControlMessage, DeadLetter, RiskResult, event_model
from txrisk.spec import BUILTIN_SPECS, load_spec

logger = logging.getLogger(__name__)


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """One flag per setting; a flag overrides its environment variable."""
    for name in names:
        info = ScorerSettings.model_fields[name]
        env = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if name == "bootstrap_servers"
            else (f"TXRISK_{name.upper()}")
        )
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            help=f"env {env}, default {info.default}",
        )


def _settings(args: argparse.Namespace) -> ScorerSettings:
    return ScorerSettings.load(**{n: getattr(args, n, None) for n in SETTING_FLAGS})


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m scorer",
        description="Score payment events from Kafka with a trained model and publish "
        "explained risk results.",
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO (default), WARNING"
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the stream scorer",
        description="Consume events, score and explain them, publish results and dead "
        "letters, commit. Settings come from the environment; flags override them. "
        "SIGTERM or Ctrl-C finish the batch in hand and exit 0.",
    )
    _add_setting_flags(run, SETTING_FLAGS)
    run.set_defaults(command=_run)

    topics = commands.add_parser(
        "create-topics",
        help="create the input, output, dead-letter and control topics",
        description="Create the scorer's topics if they do not exist. The control "
        "topic is compacted so it keeps the latest announcement.",
    )
    _add_setting_flags(
        topics,
        (
            "bootstrap_servers",
            "input_topic",
            "output_topic",
            "dead_letter_topic",
            "control_topic",
            "shadow_topic",
        ),
    )
    topics.add_argument(
        "--partitions", type=positive_int, default=4, help="partitions per data topic"
    )
    topics.set_defaults(command=_create_topics)

    schema = commands.add_parser(
        "schema",
        help="write the JSON Schemas of the contracts",
        description="Write JSON Schemas of the event (for a spec), risk result, dead "
        "letter and control message.",
    )
    schema.add_argument(
        "--spec", default=None, help=f"TOML file or {', '.join(BUILTIN_SPECS)}"
    )
    schema.add_argument(
        "--out", type=Path, default=None, help="folder for the files (default: stdout)"
    )
    schema.set_defaults(command=_schema)

    replay = commands.add_parser(
        "replay",
        help="replay a data file into the input topic (gateway simulator)",
        description="Send the rows of a labelled file as events, optionally paced and "
        "mixed with malformed messages.",
    )
    _add_setting_flags(replay, ("bootstrap_servers", "input_topic"))
    replay.add_argument(
        "--data", type=Path, required=True, help=".csv, .csv.gz, .parquet"
    )
    replay.add_argument(
        "--spec", default=None, help=f"TOML file or {', '.join(BUILTIN_SPECS)}"
    )
    replay.add_argument("--count", type=positive_int, default=None, help="rows to send")
    replay.add_argument(
        "--rate",
        type=non_negative_float,
        default=0.0,
        help="events per second (0: as fast as possible)",
    )
    replay.add_argument(
        "--bad-share",
        type=share,
        default=0.0,
        help="share of malformed messages, 0 to 1 (default 0)",
    )
    replay.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the malformed mix"
    )
    replay.set_defaults(command=_replay)

    demo = commands.add_parser(
        "demo",
        help="everything on the embedded broker: train, score, watch, summarise",
        description="Start the embedded broker, create topics, train a model if none "
        "exists, start a scorer, replay transactions and show progress and a summary. "
        "Stops all it started, also on Ctrl-C.",
    )
    demo.add_argument(
        "--source",
        choices=("synthetic", "ethereum"),
        default="synthetic",
        help="synthetic gateway events (default) or real Ethereum transactions",
    )
    demo.add_argument(
        "--events", type=positive_int, default=20_000, help="events to send"
    )
    demo.add_argument(
        "--rate",
        type=non_negative_float,
        default=0.0,
        help="events per second (0: as fast as possible)",
    )
    demo.add_argument(
        "--bad-share", type=fraction, default=0.01, help="share of malformed messages"
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path(".demo"), help="data, models and logs"
    )
    demo.set_defaults(command=_demo)

    bench = commands.add_parser(
        "bench",
        help="the performance benchmark: model, stream, latency, baseline, scale-out, "
        "memory, model swap",
        description="Measure the scorer on the embedded broker against a model "
        "trained on 200,000 synthetic rows (cached in --cache-dir) and beside the "
        "one-request-per-event baseline; print a table and write the figures as JSON.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="smoke mode: tiny sizes, about 1.5 minutes"
    )
    bench.add_argument(
        "--runs", type=positive_int, default=3, help="runs; each figure is their median"
    )
    bench.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: in --cache-dir)"
    )
    bench.add_argument(
        "--sections", default="1,2,3,4,5,6,7", help="sections to run, e.g. 2,4"
    )
    bench.add_argument(
        "--cache-dir", type=Path, default=Path(".bench"), help="model, events and logs"
    )
    bench.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="benchmark this registry's newest version instead of the cached model",
    )
    bench.set_defaults(command=_bench)

    return parser


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logger.info("scorer starting settings=%s", settings.public())
    return asyncio.run(_serve(settings))


async def _serve(settings: ScorerSettings) -> int:
    """Start up, then score and follow announcements until SIGTERM or Ctrl-C.

    1. read the control topic's history
    2. load the model it last activated (else the registry's newest)
    3. join the consumer group
    4. run the batch cycle and the control listener side by side
    """
    # Claimed first so a taken port fails before any Kafka connection.
    http = HttpServer.bind(settings.http_host, settings.http_port)
    key = signing_key()
    models = ModelManager(
        settings.model_dir,
        allow_sklearn_mismatch=settings.allow_sklearn_mismatch,
        key=key,
    )
    if key is not None:
        logger.info("model signatures required (TXRISK_MODEL_KEY is set)")
    listener = ControlListener(
        settings.bootstrap_servers, settings.control_topic, models
    )

    history = await listener.start()
    try:
        models.load_initial(settings.model_version, history)
        metrics.set_active_model(models.active.version, models.active.metadata)
        service = ScorerService(settings, models)
        await service.start()
    except BaseException:
        await listener.close()
        models.close()
        raise

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await http.start(models, service, stop)

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_until_done(service.run(stop), stop))
            tasks.create_task(_until_done(listener.run(stop), stop))
    except* PublishFailed as failed:
        # One error line and exit 2 rather than a traceback; nothing past the
        # unpublished batch was committed, so a restart scores it again.
        raise failed.exceptions[0] from None
    finally:
        await listener.close()
        await service.close()
        models.close()
        c = service.counts
        logger.info(
            "scorer stopped consumed=%d scored=%d flagged=%d dead_letters=%d "
            "batches=%d",
            c.consumed,
            c.scored,
            c.flagged,
            c.dead_letters,
            c.batches,
        )
        await http.close()
    return 0


async def _until_done(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run `work`; whichever way it ends, ask the other tasks to stop too."""
    try:
        await work
    finally:
        stop.set()


def topic_plans(settings: ScorerSettings, partitions: int) -> list[TopicPlan]:
    """The scorer's topics: data topics partitioned, the control topic compacted."""
    return [
        TopicPlan(settings.input_topic, partitions),
        TopicPlan(settings.output_topic, partitions),
        TopicPlan(settings.dead_letter_topic, partitions),
        TopicPlan(settings.control_topic, 1, {"cleanup.policy": "compact"}),
        *(
            [TopicPlan(settings.shadow_topic, partitions)]
            if settings.shadow_topic
            else []
        ),
    ]


def _create_topics(args: argparse.Namespace) -> int:
    settings = _settings(args)
    created = create_topics_sync(
        settings.bootstrap_servers, topic_plans(settings, args.partitions)
    )
    print(f"created: {', '.join(created) or 'none (all exist)'}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    schemas = {
        "event": event_model(spec).model_json_schema(),
        "risk-result": RiskResult.model_json_schema(),
        "dead-letter": DeadLetter.model_json_schema(),
        "control-message": ControlMessage.model_json_schema(),
    }
    if args.out is None:
        sys.stdout.write(
            orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        path = args.out / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote {path}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from scorer.replay import file_messages, malformed_messages, mix, produce

    settings = _settings(args)
    spec = load_spec(args.spec)
    messages = mix(
        file_messages(args.data, spec, args.count),
        malformed_messages(spec, args.seed),
        args.bad_share,
        args.seed,
    )
    sent = asyncio.run(
        produce(settings.bootstrap_servers, settings.input_topic, messages, args.rate)
    )
    print(f"sent {sent} messages to {settings.input_topic}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from scorer.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            source=args.source,
            events=args.events,
            rate=args.rate,
            bad_share=args.bad_share,
            workdir=args.workdir,
        )
    )


def _bench(args: argparse.Namespace) -> int:
    from scorer.bench import BenchOptions, parse_sections, run_bench

    return run_bench(
        BenchOptions(
            quick=args.quick,
            runs=args.runs,
            out=args.out,
            sections=parse_sections(args.sections),
            cache_dir=args.cache_dir,
            model_dir=args.model_dir,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry(build_parser, argv)

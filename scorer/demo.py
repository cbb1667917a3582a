"""`python -m scorer demo`: the whole flow on the embedded broker, watched live.

1. start the embedded broker and create the topics
2. train a model into the work folder's registry if it holds none
3. start a scorer process
4. replay transactions (with a share of malformed ones) into the input topic
5. watch the output and dead-letter topics until every message is accounted for
6. print a summary, then stop the scorer and the broker, also on Ctrl-C
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pandas as pd
from aiokafka import AIOKafkaConsumer, TopicPartition

from scorer.cli import topic_plans
from scorer.replay import file_messages, malformed_messages, mix, produce
from scorer.settings import ScorerSettings
from trainer.train import TrainOptions, train
from txrisk.broker import EmbeddedBroker, create_topics
from txrisk.bundle import list_versions
from txrisk.errors import UserError
from txrisk.spec import load_spec

logger = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
SYNTHETIC_TRAINING_ROWS = 100_000
# The demo gives up when nothing arrives on the output topics for this long:
# a scorer that has not produced a result in a minute has failed.
STALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoOptions:
    source: str = "synthetic"
    events: int = 20_000
    rate: float = 0.0
    bad_share: float = 0.01
    workdir: Path = Path(".demo")
    partitions: int = 4


@dataclass
class Tally:
    """What the watcher has seen on the output and dead-letter topics."""

    scored: int = 0
    flagged: int = 0
    dead_letters: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first_at: float | None = None
    last_at: float | None = None
    top: list[tuple[float, str, bytes]] = field(default_factory=list)
    model_version: str = ""

    @property
    def done(self) -> int:
        return self.scored + self.dead_letters


def run_demo(options: DemoOptions) -> int:
    options.workdir.mkdir(parents=True, exist_ok=True)
    spec_name = "gateway" if options.source == "synthetic" else "ethereum"
    spec = load_spec(spec_name)

    train_file, replay_file = _prepare_data(options)
    registry = options.workdir / "models" / options.source
    if not registry.exists() or not list_versions(registry):
        print(f"training a model on {train_file} ...", flush=True)
        meta = train(train_file, spec, registry, TrainOptions(seed=0))
        print(
            f"model {meta.version}: ROC AUC {meta.metrics['roc_auc']:.4f}", flush=True
        )

    broker = EmbeddedBroker(log_file=options.workdir / "broker.log")
    scorer: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        print(f"embedded broker on {broker.bootstrap_servers}", flush=True)
        settings = ScorerSettings.load(
            bootstrap_servers=broker.bootstrap_servers, model_dir=registry
        )
        asyncio.run(
            create_topics(
                broker.bootstrap_servers, topic_plans(settings, options.partitions)
            )
        )

        scorer = _start_scorer(settings, options.workdir / "scorer.log")
        tally = asyncio.run(
            _replay_and_watch(settings, spec_name, replay_file, options, scorer)
        )
        _print_summary(tally, options)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the scorer and the broker", flush=True)
        return 130
    finally:
        if scorer is not None:
            _stop_scorer(scorer)
        broker.stop()


def _prepare_data(options: DemoOptions) -> tuple[Path, Path]:
    """Training and replay files: the replayed events are never trained on."""
    if options.source == "synthetic":
        from trainer.generate import generate, write_table

        train_file = options.workdir / "synthetic-train.parquet"
        replay_file = options.workdir / f"synthetic-replay-{options.events}.parquet"
        if not train_file.exists():
            write_table(generate(SYNTHETIC_TRAINING_ROWS, seed=1), train_file)
        if not replay_file.exists():
            write_table(generate(options.events, seed=2), replay_file)
        return train_file, replay_file

    # The real file is ordered by time: train on the earlier 80%, replay the rest.
    train_file = options.workdir / "ethereum-train.csv.gz"
    replay_file = options.workdir / "ethereum-replay.csv.gz"
    if not train_file.exists() or not replay_file.exists():
        frame = pd.read_csv(REPO_DATA / "ethereum" / "transactions.csv.gz")
        # Ids from the row in the whole file, so replayed ids stay unique.
        frame.insert(0, "tx_id", [f"eth-{row}" for row in range(len(frame))])
        cut = int(len(frame) * 0.8)
        frame.iloc[:cut].to_csv(train_file, index=False)
        frame.iloc[cut:].to_csv(replay_file, index=False)
    return train_file, replay_file


def _start_scorer(settings: ScorerSettings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "TXRISK_MODEL_DIR": str(settings.model_dir),
        "TXRISK_GROUP_ID": "txrisk-demo",
        # A free loopback port unless one is asked for: 8000 may be taken on a
        # laptop; the log says which ("http listening").
        "TXRISK_HTTP_PORT": os.environ.get("TXRISK_HTTP_PORT", "0"),
        "TXRISK_HTTP_HOST": os.environ.get("TXRISK_HTTP_HOST", "127.0.0.1"),
    }
    log = log_path.open("ab")
    print(f"scorer started; its log is {log_path}", flush=True)
    return subprocess.Popen(
        [sys.executable, "-m", "scorer", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own process group: Ctrl-C reaches the demo, which then stops the
        # scorer with SIGTERM so it can finish its batch.
        start_new_session=True,
    )


def _stop_scorer(scorer: subprocess.Popen[bytes]) -> None:
    if scorer.poll() is None:
        scorer.send_signal(signal.SIGTERM)
        try:
            scorer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            scorer.kill()
            scorer.wait()


async def _replay_and_watch(
    settings: ScorerSettings,
    spec_name: str,
    replay_file: Path,
    options: DemoOptions,
    scorer: subprocess.Popen[bytes],
) -> Tally:
    spec = load_spec(spec_name)
    messages = mix(
        file_messages(replay_file, spec, options.events),
        malformed_messages(spec, seed=3),
        options.bad_share,
        seed=3,
    )
    sent = [0]
    producing = asyncio.create_task(
        produce(
            settings.bootstrap_servers,
            settings.input_topic,
            messages,
            options.rate,
            on_sent=lambda n: sent.__setitem__(0, n),
        )
    )
    tally = Tally()
    started = time.monotonic()
    consumer = await _watcher(settings, options.partitions)
    try:
        last_change, last_done, last_print = time.monotonic(), -1, 0.0
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now = time.monotonic()
            for tp, records in batch.items():
                _tally(tally, tp.topic == settings.dead_letter_topic, records, now)

            if tally.done != last_done:
                last_done, last_change = tally.done, now
            if now - last_print >= 1.0:
                _print_progress(sent[0], tally, now - started)
                last_print = now

            if producing.done():
                producing.result()
                if tally.done >= sent[0]:
                    break
            if scorer.poll() is not None:
                raise UserError(
                    f"the scorer exited with code {scorer.returncode}; see its log"
                )
            if now - last_change > STALL_TIMEOUT_S:
                raise UserError("no results for a minute; see the scorer's log")
    finally:
        await consumer.stop()
        if not producing.done():
            producing.cancel()
    _print_progress(sent[0], tally, time.monotonic() - started)
    print(flush=True)
    return tally


async def _watcher(settings: ScorerSettings, partitions: int) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    assigned = [
        TopicPartition(topic, p)
        for topic in (settings.output_topic, settings.dead_letter_topic)
        for p in range(partitions)
    ]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    return consumer


def _tally(tally: Tally, dead: bool, records: list, now: float) -> None:
    if tally.first_at is None:
        tally.first_at = now
    tally.last_at = now
    for record in records:
        document = orjson.loads(record.value)
        if dead:
            tally.dead_letters += 1
            tally.kinds[document["error"]] = tally.kinds.get(document["error"], 0) + 1
            continue
        tally.scored += 1
        tally.model_version = document["model_version"]
        if document["is_flagged"]:
            tally.flagged += 1
            entry = (document["fraud_probability"], document["tx_id"], record.value)
            if len(tally.top) < 5:
                heapq.heappush(tally.top, entry)
            else:
                heapq.heappushpop(tally.top, entry)


def _print_progress(sent: int, tally: Tally, elapsed: float) -> None:
    rate = tally.done / elapsed if elapsed > 0 else 0.0
    line = (
        f"events in {sent:>7} | scored {tally.scored:>7} | flagged {tally.flagged:>5} "
        f"| dead letters {tally.dead_letters:>4} | {rate:>7.0f} events/s"
    )
    if sys.stdout.isatty():
        print(f"\r{line}", end="", flush=True)
    else:
        print(line, flush=True)


def _print_summary(tally: Tally, options: DemoOptions) -> None:
    span = (tally.last_at or 0) - (tally.first_at or 0)
    rate = tally.done / span if span > 0 else float("nan")
    print(f"\nsummary ({options.source}, model {tally.model_version})")
    print(f"  scored        {tally.scored}")
    print(
        f"  flagged       {tally.flagged} ({tally.flagged / max(tally.scored, 1):.2%})"
    )
    print(f"  dead letters  {tally.dead_letters} {dict(sorted(tally.kinds.items()))}")
    print(f"  throughput    {rate:.0f} events/s from first to last result")
    print("\nmost suspicious flagged transactions:")
    for probability, tx_id, raw in sorted(tally.top, reverse=True):
        features = orjson.loads(raw)["top_features"]
        reasons = ", ".join(
            f"{f['feature']}={_short(f['value'])} ({f['contribution']:+.2f})"
            for f in features
        )
        print(f"  {tx_id}  p={probability:.3f}  {reasons}")
    print("\n(contributions are in log-odds; + pushes towards fraud)")


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "missing" if value is None else str(value)

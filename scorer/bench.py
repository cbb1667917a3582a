"""`python -m scorer bench`: the performance benchmark, in one command.

Against the real embedded broker and a model trained on 200,000 synthetic rows
with the default pipeline (cached under `.bench/`, so a rerun skips training):

1. model only: prepare + `predict_proba`, explanation (TreeSHAP + top 3) and the
   whole scoring worker, CPU per event at batch sizes 1 to 10,000
2. stream throughput: one scorer process drains a pre-filled topic; events/s
   and events per CPU-second of the scorer, explaining every event and only
   flagged ones
3. latency under load: a producer paced at 1,000 and 5,000 events/s;
   end-to-end latency from handing the event to Kafka to seeing its result on
   the output topic
4. baseline: the one-event-per-request FastAPI design on the same model under
   uvicorn, driven over loopback; requests per CPU-second and latency, and the
   ratio to the scorer's events per CPU-second in the same run
5. scale-out: one against two scorer processes in one group, 4 partitions
6. memory: peak RSS of a scorer at a steady rate and during a 10x burst
7. model swap: rate, p99 latency and the longest gap between results in the
   seconds after a new version is announced, against steady state

Each figure is the median of `--runs` runs with min and max. Processes are
measured from outside (psutil), so the benchmark's own producer and consumer
never count against the scorer; they do share the machine's cores with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import platform
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from txrisk.errors import UserError

try:
    import httpx
    import psutil
except ImportError as exc:  # pragma: no cover - depends on the install
    raise UserError(
        f"the benchmark needs {exc.name}: install the dev extras "
        "(pip install -e '.[dev]', which `make bench` does)"
    ) from exc

from aiokafka import ConsumerRecord
from threadpoolctl import threadpool_limits

from scorer.bench_baseline import MODEL_DIR_ENV, VERSION_ENV
from scorer.bench_tools import (
    HTTP_TIMEOUT_S,
    STALL_TIMEOUT_S,
    BenchError,
    ChildProcess,
    Message,
    Sender,
    Watcher,
    broker_process,
    cpu_seconds,
    delete_topics,
    histogram_quantile,
    metric_value,
    percentile,
    prefill,
    producer,
    python_env,
    scorer_ready,
    start_scorer,
)
from txrisk.broker import EmbeddedBroker, TopicPlan, create_topics, free_port
from txrisk.bundle import (
    METADATA_FILE,
    list_versions,
    load_bundle,
    read_metadata,
)
from txrisk.spec import load_spec

logger = logging.getLogger(__name__)

SECTIONS = {
    1: "model only",
    2: "stream throughput",
    3: "latency under load",
    4: "baseline side by side",
    5: "scale-out",
    6: "memory",
    7: "model swap",
}
PARTITIONS = 4
TOP_FEATURES = 3
# Seeds: training data and replayed events come from different draws, so the
# scorer never sees rows the model was trained on.
TRAINING_SEED = 1
EVENTS_SEED = 2
# The paced producer wakes this often; at 5,000 events/s that is five events
# per wake, close enough to a steady stream.
TICK_S = 0.001
# Memory is sampled this often: fine enough to catch a burst's peak.
RSS_SAMPLE_S = 0.1
STEADY_RATE = 1_000.0
BURST_FACTOR = 10


@dataclass(frozen=True)
class Sizes:
    """How much each section does; the quick mode only checks it all works."""

    training_rows: int
    drain_events: int
    pool_events: int
    batch_sizes: tuple[int, ...]
    model_min_s: float  # CPU time spent on each model-only figure
    warm_s: float  # unmeasured load before each measured phase
    load_s: float  # each paced latency phase
    rates: tuple[float, ...]
    baseline_latency_s: float  # one request at a time
    baseline_load_s: float  # `baseline_concurrency` requests at a time
    baseline_concurrency: int
    memory_steady_s: float
    memory_burst_s: float
    swap_total_s: float  # steady load of the swap run
    swap_at_s: float  # when the new version is announced in it
    swap_window_s: float  # what counts as "around the swap"


FULL = Sizes(
    training_rows=200_000,
    drain_events=200_000,
    pool_events=200_000,
    batch_sizes=(1, 10, 100, 1_000, 10_000),
    model_min_s=0.5,
    warm_s=2.0,
    load_s=30.0,
    rates=(1_000.0, 5_000.0),
    baseline_latency_s=5.0,
    baseline_load_s=15.0,
    baseline_concurrency=8,
    memory_steady_s=10.0,
    memory_burst_s=10.0,
    swap_total_s=30.0,
    swap_at_s=15.0,
    swap_window_s=10.0,
)
QUICK = Sizes(
    training_rows=20_000,
    drain_events=10_000,
    pool_events=25_000,
    batch_sizes=(1, 10, 100, 1_000),
    model_min_s=0.05,
    warm_s=0.5,
    load_s=2.0,
    rates=(1_000.0, 5_000.0),
    baseline_latency_s=1.0,
    baseline_load_s=2.0,
    baseline_concurrency=8,
    memory_steady_s=1.5,
    memory_burst_s=1.5,
    # Six seconds after the announcement: a starved test machine may take a
    # few to load and verify the new version.
    swap_total_s=8.0,
    swap_at_s=2.0,
    swap_window_s=3.0,
)


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = False
    runs: int = 3
    out: Path | None = None
    sections: tuple[int, ...] = tuple(SECTIONS)
    cache_dir: Path = Path(".bench")
    # Serve the newest version of this registry instead of the cached model.
    model_dir: Path | None = None


# --- figures ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """`median <op> bound`; the bound is a number or another figure's median."""

    op: str
    bound: float | None = None
    bound_key: str | None = None
    text: str = ""

    def met(self, median: float, figures: dict[str, Figure]) -> bool | None:
        bound = self.bound
        if self.bound_key is not None:
            other = figures.get(self.bound_key)
            bound = other.median if other is not None else None
        if bound is None or math.isnan(bound) or math.isnan(median):
            return None
        return median >= bound if self.op == ">=" else median <= bound


@dataclass
class Figure:
    key: str
    section: int
    label: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: Target | None = None

    @property
    def median(self) -> float:
        finite = [v for v in self.values if not math.isnan(v)]
        return float(np.median(finite)) if finite else math.nan

    @property
    def low(self) -> float:
        finite = [v for v in self.values if not math.isnan(v)]
        return min(finite) if finite else math.nan

    @property
    def high(self) -> float:
        finite = [v for v in self.values if not math.isnan(v)]
        return max(finite) if finite else math.nan


class Figures:
    """Every figure of the benchmark, in the order first recorded."""

    def __init__(self) -> None:
        self.by_key: dict[str, Figure] = {}

    def add(
        self,
        key: str,
        section: int,
        label: str,
        unit: str,
        value: float,
        target: Target | None = None,
    ) -> None:
        figure = self.by_key.setdefault(
            key, Figure(key, section, label, unit, target=target)
        )
        figure.values.append(float(value))

    def met(self, figure: Figure) -> bool | None:
        return figure.target.met(figure.median, self.by_key) if figure.target else None


# --- the run ---------------------------------------------------------------


@dataclass
class Context:
    """What every section of one invocation shares."""

    bootstrap: str
    registry: Path
    version: str
    swap_version: str
    messages: list[Message]
    sizes: Sizes
    workdir: Path
    prefilled: str = ""
    logs: int = 0

    def log(self, label: str) -> Path:
        self.logs += 1
        return self.workdir / "logs" / f"{self.logs:03d}-{label}.log"

    def scorer_env(
        self, names: TopicNames, input_topic: str, extra: dict[str, str]
    ) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TXRISK_MODEL_DIR": str(self.registry),
            # Pinned: the registry also holds the swap section's second version.
            "TXRISK_MODEL_VERSION": self.version,
            "TXRISK_INPUT_TOPIC": input_topic,
            "TXRISK_OUTPUT_TOPIC": names.output,
            "TXRISK_DEAD_LETTER_TOPIC": names.dead_letter,
            "TXRISK_CONTROL_TOPIC": names.control,
            "TXRISK_GROUP_ID": names.group,
            "TXRISK_TOP_FEATURES": str(TOP_FEATURES),
            "TXRISK_HTTP_PORT": "0",
            "TXRISK_HTTP_HOST": "127.0.0.1",
            "TXRISK_LOG_LEVEL": "INFO",
            **extra,
        }


@dataclass(frozen=True)
class TopicNames:
    input: str
    output: str
    dead_letter: str
    control: str
    group: str

    @classmethod
    def fresh(cls, label: str) -> TopicNames:
        tag = f"{label}-{uuid.uuid4().hex[:6]}"
        return cls(
            f"bench-in-{tag}",
            f"bench-out-{tag}",
            f"bench-dlq-{tag}",
            f"bench-control-{tag}",
            f"bench-group-{tag}",
        )

    async def create(self, bootstrap: str, with_input: bool) -> None:
        plans = [
            TopicPlan(self.output, PARTITIONS),
            TopicPlan(self.dead_letter, PARTITIONS),
            TopicPlan(self.control, 1, {"cleanup.policy": "compact"}),
        ]
        if with_input:
            plans.append(TopicPlan(self.input, PARTITIONS))
        await create_topics(bootstrap, plans)

    async def delete(self, bootstrap: str, with_input: bool) -> None:
        topics = [self.output, self.dead_letter, self.control]
        await delete_topics(bootstrap, topics + ([self.input] if with_input else []))


def run_bench(options: BenchOptions) -> int:
    """Run the selected sections `options.runs` times; print and write the figures."""
    sizes = QUICK if options.quick else FULL
    # One line per readiness poll or topic created would bury the progress.
    for name in ("httpx", "txrisk.broker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    started = time.perf_counter()
    load_before = os.getloadavg()
    cache = options.cache_dir
    workdir = cache / ("last-quick-run" if options.quick else "last-run")
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    out = options.out or cache / ("bench-quick.json" if options.quick else "bench.json")

    registry, version, swap_version = _model(options, sizes, cache, workdir)
    messages = _events(cache, sizes.pool_events)
    figures = Figures()

    print(f"logs: {workdir / 'logs'}", flush=True)
    with EmbeddedBroker(log_file=workdir / "broker.log") as broker:
        ctx = Context(
            broker.bootstrap_servers,
            registry,
            version,
            swap_version,
            messages,
            sizes,
            workdir,
        )
        if {2, 4, 5} & set(options.sections):
            ctx.prefilled = asyncio.run(_prefill(ctx))
        for run in range(options.runs):
            per_run: dict[str, Drain] = {}
            for section in options.sections:
                title = f"section {section}: {SECTIONS[section]}"
                print(f"run {run + 1}/{options.runs}  {title} ...", end="", flush=True)
                section_started = time.perf_counter()
                RUNNERS[section](ctx, figures, per_run)
                print(f" {time.perf_counter() - section_started:.0f} s", flush=True)

    elapsed = time.perf_counter() - started
    measured_on = machine(load_before)
    report = {
        "created_at": datetime.now(UTC).isoformat(),
        "mode": "quick" if options.quick else "full",
        "runs": options.runs,
        "sections": list(options.sections),
        "seconds": round(elapsed, 1),
        "machine": measured_on,
        "sizes": asdict(sizes),
        "model": {"registry": str(registry), "version": version},
        "figures": [
            {
                "key": f.key,
                "section": f.section,
                "label": f.label,
                "unit": f.unit,
                "median": _finite(f.median),
                "min": _finite(f.low),
                "max": _finite(f.high),
                "values": [_finite(v) for v in f.values],
                "target": f.target.text if f.target else None,
                "met": figures.met(f),
            }
            for f in figures.by_key.values()
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    print(table(figures, options.runs))
    print(f"\n{describe_machine(measured_on)}")
    print(f"took {elapsed:.0f} s; figures in {out}")
    return 0


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


# --- inputs ----------------------------------------------------------------


def _model(
    options: BenchOptions, sizes: Sizes, cache: Path, workdir: Path
) -> tuple[Path, str, str]:
    """A run registry with the model under test and a second version of it.

    The second version is the same model file under another name: what a swap
    costs (verify, unpickle, re-score the canary, build the explainer) does not
    depend on the weights, and scoring stays comparable before and after.
    """
    if options.model_dir is not None:
        source = options.model_dir
        found = list_versions(source)
        if not found:
            raise UserError(f"--model-dir {source}: holds no model bundle")
        version = found[-1].version
    else:
        source, version = _trained(cache, sizes.training_rows)

    registry = workdir / "models"
    registry.mkdir()
    shutil.copytree(source / version, registry / version)
    swap_version = f"{version}-swap"
    shutil.copytree(source / version, registry / swap_version)
    meta = read_metadata(registry / version).model_copy(
        update={"version": swap_version, "signature": None}
    )
    (registry / swap_version / METADATA_FILE).write_text(
        meta.model_dump_json(indent=2) + "\n"
    )
    return registry, version, swap_version


def _trained(cache: Path, rows: int) -> tuple[Path, str]:
    """The cached model trained on `rows` synthetic rows; trained on first use."""
    import sklearn

    from trainer.generate import generate, write_table
    from trainer.train import TrainOptions, train

    registry = cache / f"model-{rows}"
    version = f"bench-{rows}"
    if (registry / version / METADATA_FILE).is_file():
        meta = read_metadata(registry / version)
        if meta.libraries.get("scikit-learn") == sklearn.__version__:
            print(f"using the cached model {registry / version} (delete it to retrain)")
            return registry, version
        print(
            f"the cached model was trained with scikit-learn "
            f"{meta.libraries.get('scikit-learn')}; retraining"
        )
    shutil.rmtree(registry, ignore_errors=True)
    data = cache / f"training-{rows}.parquet"
    print(
        f"training the benchmark model on {rows:,} synthetic rows (once; cached in "
        f"{registry}) ...",
        flush=True,
    )
    write_table(generate(rows, seed=TRAINING_SEED), data)
    meta = train(
        data, load_spec("gateway"), registry, TrainOptions(seed=0, version=version)
    )
    print(f"model {version}: ROC AUC {meta.metrics['roc_auc']:.4f}", flush=True)
    return registry, version


def _events(cache: Path, count: int) -> list[Message]:
    """`count` gateway events as (key, value), cached as one JSON value a line."""
    path = cache / f"events-{count}-seed{EVENTS_SEED}.jsonl"
    if not path.is_file():
        from scorer.replay import file_messages
        from trainer.generate import generate, write_table

        table_path = cache / f"events-{count}.parquet"
        write_table(generate(count, seed=EVENTS_SEED), table_path)
        values = [
            m.value for m in file_messages(table_path, load_spec("gateway"), None)
        ]
        path.write_bytes(b"\n".join(v for v in values if v) + b"\n")
        table_path.unlink()
    messages = []
    for line in path.read_bytes().splitlines():
        messages.append((orjson.loads(line)["tx_id"].encode(), line))
    return messages


async def _prefill(ctx: Context) -> str:
    names = TopicNames.fresh("prefill")
    await create_topics(ctx.bootstrap, [TopicPlan(names.input, PARTITIONS)])
    started = time.perf_counter()
    await prefill(
        ctx.bootstrap, names.input, PARTITIONS, ctx.messages[: ctx.sizes.drain_events]
    )
    print(
        f"pre-filled {names.input} with {ctx.sizes.drain_events:,} events in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return names.input


# --- 1. model only -----------------------------------------------------------


def section_model(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    """CPU per event of each stage at each batch size, in this process, one thread."""
    from scorer.decode import decode
    from scorer.service import _decode_and_score
    from txrisk.contracts import SourceRef, TransactionEvent, event_model
    from txrisk.explain import top_features
    from txrisk.frame import to_frame

    bundle = load_bundle(ctx.registry, ctx.version)
    spec = bundle.spec
    largest = max(ctx.sizes.batch_sizes)
    messages = ctx.messages[:largest]
    event_type = event_model(spec)
    source = SourceRef(topic="bench", partition=0, offset=0)
    events = [decode(value, key, source, event_type) for key, value in messages]
    rows = [event.__dict__ for event in events if isinstance(event, TransactionEvent)]
    records = [
        ConsumerRecord(
            topic="bench",
            partition=0,
            offset=offset,
            timestamp=0,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key),
            serialized_value_size=len(value),
            headers=[],
        )
        for offset, (key, value) in enumerate(messages)
    ]

    with threadpool_limits(1):  # the scorer's default: one native thread
        for size in ctx.sizes.batch_sizes:
            chunk = rows[:size]
            prepared = bundle.prepare_rows(chunk)

            def predict(chunk: list[dict[str, Any]] = chunk) -> None:
                bundle.pipeline[-1].predict_proba(bundle.prepare_rows(chunk))

            def frame(chunk: list[dict[str, Any]] = chunk) -> None:
                bundle.pipeline.predict_proba(to_frame(spec, chunk))

            def explain(prepared: Any = prepared) -> None:
                top_features(
                    bundle.explainer.explain(prepared), spec.columns, TOP_FEATURES
                )

            def worker(batch: list[ConsumerRecord] = records[:size]) -> None:
                _decode_and_score(bundle, None, batch, TOP_FEATURES, False)

            for key, label, fn in (
                ("frame", "sklearn pipeline on a DataFrame (baseline's path)", frame),
                ("predict", "prepare + predict_proba (scorer's path)", predict),
                ("explain", "TreeSHAP + top 3", explain),
                ("worker", "whole worker: decode, score, explain, encode", worker),
            ):
                micros = _cpu_per_call(fn, ctx.sizes.model_min_s) / size * 1e6
                figures.add(
                    f"model.{key}.b{size}",
                    1,
                    f"{label}, batch {size:,}",
                    "µs/event",
                    micros,
                )


def _cpu_per_call(fn: Callable[[], None], min_s: float) -> float:
    """CPU seconds of this thread per call, over at least `min_s` after a warm-up."""
    fn()
    calls, spent = 0, 0.0
    while spent < min_s or calls < 2:
        started = time.thread_time()
        fn()
        spent += time.thread_time() - started
        calls += 1
    return spent / calls


# --- 2 and 5. draining a pre-filled topic ------------------------------------


@dataclass(frozen=True)
class Drain:
    """One drain of the pre-filled topic, measured from the first result seen
    once every scorer was ready to the last one."""

    processes: int
    events: int
    wall_s: float
    scorer_cpu_s: float
    broker_cpu_s: float
    bench_cpu_s: float
    startup_s: float
    duplicates: int
    flagged_share: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.scorer_cpu_s if self.scorer_cpu_s > 0 else math.nan


@dataclass(frozen=True)
class _Mark:
    at: float
    count: int
    scorer_cpu: float
    broker_cpu: float
    bench_cpu: float


def drain(ctx: Context, processes: int, explain: str, label: str) -> Drain:
    return asyncio.run(_drain(ctx, processes, explain, label))


async def _drain(ctx: Context, processes: int, explain: str, label: str) -> Drain:
    names = TopicNames.fresh(label)
    await names.create(ctx.bootstrap, with_input=False)
    env = ctx.scorer_env(names, ctx.prefilled, {"TXRISK_EXPLAIN": explain})
    watcher = await Watcher.open(ctx.bootstrap, names.output, PARTITIONS)
    scorers = [start_scorer(env, ctx.log(f"{label}-{i}")) for i in range(processes)]
    broker, bench = broker_process(), psutil.Process()
    ready = asyncio.create_task(_all_ready(scorers))

    def mark(at: float) -> _Mark:
        return _Mark(
            at,
            len(watcher.seen),
            sum(s.cpu() for s in scorers),
            cpu_seconds(broker) if broker else math.nan,
            cpu_seconds(bench),
        )

    try:
        target = ctx.sizes.drain_events
        first: _Mark | None = None
        first_any: _Mark | None = None
        last_new = time.perf_counter()
        while len(watcher.seen) < target:
            if ready.done():
                ready.result()  # raises if a scorer failed to start
            at, records = await watcher.poll()
            if records:
                last_new = at
                first_any = first_any or mark(at)
                if first is None and ready.done():
                    first = mark(at)
            elif ready.done() and at - last_new > STALL_TIMEOUT_S:
                raise BenchError(
                    f"{label}: no result for {STALL_TIMEOUT_S:.0f} s with "
                    f"{len(watcher.seen)}/{target} scored; see {ctx.workdir / 'logs'}"
                )
            for scorer in scorers:
                scorer.check_alive("a scorer")
        end = mark(time.perf_counter())
        await ready  # each start-up time, also of a scorer the drain beat
        texts = [await scorer.get_text("/metrics") for scorer in scorers]
        scored = sum(metric_value(t, "txrisk_events_scored_total") for t in texts)
        flagged = sum(metric_value(t, "txrisk_events_flagged_total") for t in texts)
        if first is None or target - first.count < target // 10:
            # Only with a tiny topic (the quick mode): the figure then is
            # mostly that of the scorer that joined first.
            logger.warning(
                "%s: most events were scored before every scorer was ready; "
                "measuring from the first result",
                label,
            )
            assert first_any is not None
            first = first_any
        return Drain(
            processes=processes,
            events=end.count - first.count,
            wall_s=end.at - first.at,
            scorer_cpu_s=end.scorer_cpu - first.scorer_cpu,
            broker_cpu_s=end.broker_cpu - first.broker_cpu,
            bench_cpu_s=end.bench_cpu - first.bench_cpu,
            startup_s=max(s.seconds_to_ready() for s in scorers),
            duplicates=watcher.duplicates,
            flagged_share=flagged / scored if scored > 0 else math.nan,
        )
    finally:
        ready.cancel()
        for scorer in scorers:
            scorer.stop()
        await watcher.close()
        await names.delete(ctx.bootstrap, with_input=False)


async def _all_ready(scorers: Sequence[ChildProcess]) -> None:
    await asyncio.gather(*(scorer_ready(s) for s in scorers))


def _one_scorer(ctx: Context, per_run: dict[str, Drain]) -> Drain:
    """The all-explained single-scorer drain of this run (sections 2, 4, 5 share it)."""
    if "all" not in per_run:
        per_run["all"] = drain(ctx, 1, "all", "drain-all")
    return per_run["all"]


def section_stream(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    targets = {"all": 20_000.0, "flagged": 50_000.0}
    for explain, text in (("all", "top 3 on every event"), ("flagged", "flagged only")):
        result = (
            _one_scorer(ctx, per_run)
            if explain == "all"
            else drain(ctx, 1, explain, f"drain-{explain}")
        )
        per_run[explain] = result
        figures.add(
            f"stream.{explain}.events_per_s",
            2,
            f"events/s wall, {text}",
            "events/s",
            result.events_per_s,
        )
        bound = targets[explain]
        figures.add(
            f"stream.{explain}.events_per_cpu_s",
            2,
            f"events per scorer CPU-s, {text}",
            "events/CPU-s",
            result.events_per_cpu_s,
            Target(">=", bound, text=f">= {bound:,.0f}"),
        )
        figures.add(
            f"stream.{explain}.cores",
            2,
            f"  scorer cores busy, {text}",
            "cores",
            result.scorer_cpu_s / result.wall_s,
        )
        figures.add(
            f"stream.{explain}.broker_cores",
            2,
            f"  broker cores, {text}",
            "cores",
            result.broker_cpu_s / result.wall_s,
        )
        figures.add(
            f"stream.{explain}.bench_cores",
            2,
            f"  bench process cores, {text}",
            "cores",
            result.bench_cpu_s / result.wall_s,
        )
    figures.add(
        "stream.flagged_share",
        2,
        "  share of events flagged (explained when flagged only)",
        "%",
        per_run["flagged"].flagged_share * 100,
    )
    figures.add(
        "stream.startup_s",
        2,
        "scorer start to ready (imports, model load)",
        "s",
        per_run["all"].startup_s,
    )


def section_scale(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    one = _one_scorer(ctx, per_run)
    two = drain(ctx, 2, "all", "drain-two")
    figures.add(
        "scale.one.events_per_s",
        5,
        "1 scorer, events/s wall",
        "events/s",
        one.events_per_s,
    )
    figures.add(
        "scale.two.events_per_s",
        5,
        "2 scorers, events/s wall",
        "events/s",
        two.events_per_s,
    )
    figures.add(
        "scale.ratio",
        5,
        "2 scorers / 1 scorer, events/s",
        "x",
        two.events_per_s / one.events_per_s,
        Target(">=", 1.7, text=">= 1.7"),
    )
    figures.add(
        "scale.two.events_per_cpu_s",
        5,
        "2 scorers, events per scorer CPU-s",
        "events/CPU-s",
        two.events_per_cpu_s,
    )
    total = (two.scorer_cpu_s + two.broker_cpu_s + two.bench_cpu_s) / two.wall_s
    figures.add(
        "scale.two.cores",
        5,
        "2 scorers: cores busy, scorers+broker+bench",
        "cores",
        total,
    )
    figures.add(
        "scale.one.cores",
        5,
        "1 scorer: cores busy, scorer+broker+bench",
        "cores",
        (one.scorer_cpu_s + one.broker_cpu_s + one.bench_cpu_s) / one.wall_s,
    )
    figures.add(
        "scale.two.duplicates",
        5,
        "2 scorers: results repeated by the rebalance",
        "results",
        two.duplicates,
    )


# --- 3, 6 and 7. paced load ----------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    rate: float
    seconds: float
    # Wait until every event sent so far has its result before the next phase.
    drain_after: bool = False


@dataclass
class PhaseRun:
    sent: int = 0
    started: float = math.nan
    ended: float = math.nan
    cpu_start: float = math.nan
    cpu_end: float = math.nan
    bench_cpu_start: float = math.nan
    bench_cpu_end: float = math.nan
    metrics_start: str = ""

    @property
    def rate(self) -> float:
        return self.sent / (self.ended - self.started)

    @property
    def cores(self) -> float:
        return (self.cpu_end - self.cpu_start) / (self.ended - self.started)

    @property
    def bench_cores(self) -> float:
        spent = self.bench_cpu_end - self.bench_cpu_start
        return spent / (self.ended - self.started)


@dataclass
class Paced:
    phases: list[PhaseRun]
    # (seen at, latency s, phase index, model version or "") per result
    results: list[tuple[float, float, int, str]] = field(default_factory=list)
    # The times of polls that brought at least one new result.
    receipts: list[float] = field(default_factory=list)
    # (time, phase index, RSS bytes)
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    # (latency s, phase index) of each input event fetched by a plain consumer
    transit: list[tuple[float, int]] = field(default_factory=list)
    announced_at: float = math.nan
    metrics_end: str = ""
    ended: float = math.nan

    def latencies_ms(self, phase: int) -> list[float]:
        return [lat * 1e3 for _, lat, p, _ in self.results if p == phase]

    def transit_ms(self, phase: int) -> list[float]:
        return [lat * 1e3 for lat, p in self.transit if p == phase]

    def scrapes(self, phase: int) -> tuple[str, str]:
        """The scorer's metrics at the start and at the end of a phase (and
        its drain)."""
        after = (
            self.phases[phase + 1].metrics_start
            if phase + 1 < len(self.phases)
            else self.metrics_end
        )
        return self.phases[phase].metrics_start, after

    def scorer_latency_ms(self, phase: int) -> tuple[float, float]:
        """Mean and p99 bucket bound of the scorer's own end-to-end histogram
        (input record's Kafka timestamp to the ack of its result)."""
        before, after = self.scrapes(phase)
        name = "txrisk_end_to_end_latency_seconds"
        count = metric_value(after, f"{name}_count") - metric_value(
            before, f"{name}_count"
        )
        total = metric_value(after, f"{name}_sum") - metric_value(before, f"{name}_sum")
        mean = total / count * 1e3 if count > 0 else math.nan
        return mean, histogram_quantile(before, after, name, 0.99) * 1e3

    def batches(self, phase: int) -> tuple[float, float]:
        """Mean events per batch and mean scoring ms per batch, from the
        scorer's own histograms over the phase (and its drain)."""
        before, after = self.scrapes(phase)

        def delta(name: str) -> float:
            return metric_value(after, name) - metric_value(before, name)

        count = delta("txrisk_batch_scoring_seconds_count")
        if count <= 0:
            return math.nan, math.nan
        size = delta("txrisk_batch_size_events_sum") / count
        return size, delta("txrisk_batch_scoring_seconds_sum") / count * 1e3

    def first_seen(self, version: str) -> float:
        times = [at for at, _, _, v in self.results if v == version]
        return min(times) if times else math.nan


@dataclass(frozen=True)
class SwapPlan:
    phase: int
    at_s: float
    version: str


def paced(
    ctx: Context, phases: list[Phase], label: str, swap: SwapPlan | None = None
) -> Paced:
    needed = sum(int(p.rate * p.seconds) for p in phases)
    if needed > len(ctx.messages):
        raise BenchError(
            f"{label} needs {needed} events; the pool has {len(ctx.messages)}"
        )
    return asyncio.run(_paced(ctx, phases, label, swap))


async def _paced(
    ctx: Context, phases: list[Phase], label: str, swap: SwapPlan | None
) -> Paced:
    names = TopicNames.fresh(label)
    await names.create(ctx.bootstrap, with_input=True)
    scorer = start_scorer(ctx.scorer_env(names, names.input, {}), ctx.log(label))
    watcher: Watcher | None = None
    transit: Watcher | None = None
    client = producer(ctx.bootstrap)
    tasks: list[asyncio.Task[None]] = []
    try:
        await scorer_ready(scorer)
        watcher = await Watcher.open(ctx.bootstrap, names.output, PARTITIONS)
        # A consumer with aiokafka's default fetch settings, as the scorer's,
        # on the input topic: how long transport alone takes to hand an event
        # to a consumer.
        transit = await Watcher.open(
            ctx.bootstrap, names.input, PARTITIONS, fetch_max_wait_ms=None
        )
        await client.start()
        run = Paced([PhaseRun() for _ in phases])
        sent_at: dict[bytes, tuple[float, int]] = {}
        transit_at: dict[bytes, tuple[float, int]] = {}
        state = {"phase": 0, "producing": 1}
        tasks = [
            asyncio.create_task(_sample_rss(scorer, run, state)),
            asyncio.create_task(_transit(transit, run, transit_at)),
            *([asyncio.create_task(_announce(ctx, names, run, swap))] if swap else []),
        ]
        consumer = asyncio.create_task(
            _consume(
                watcher, scorer, run, sent_at, state, track_versions=swap is not None
            )
        )
        sender = Sender(client, names.input, PARTITIONS)
        try:
            await _produce(
                ctx, phases, run, sender, (sent_at, transit_at), state, scorer, consumer
            )
        finally:
            state["producing"] = 0
        await consumer
        run.ended = time.perf_counter()
        run.metrics_end = await scorer.get_text("/metrics")
        return run
    finally:
        for task in tasks:
            task.cancel()
        await client.stop()
        for reader in (watcher, transit):
            if reader is not None:
                await reader.close()
        scorer.stop()
        await names.delete(ctx.bootstrap, with_input=True)


async def _produce(
    ctx: Context,
    phases: list[Phase],
    run: Paced,
    sender: Sender,
    sent: tuple[dict[bytes, tuple[float, int]], dict[bytes, tuple[float, int]]],
    state: dict[str, int],
    scorer: ChildProcess,
    consumer: asyncio.Task[None],
) -> None:
    sent_at, transit_at = sent
    bench = psutil.Process()
    cursor = 0
    for index, phase in enumerate(phases):
        record = run.phases[index]
        record.metrics_start = await scorer.get_text("/metrics")
        state["phase"] = index
        total = int(phase.rate * phase.seconds)
        record.cpu_start = scorer.cpu()
        record.bench_cpu_start = cpu_seconds(bench)
        record.started = time.perf_counter()
        count = 0
        while count < total:
            if consumer.done():
                consumer.result()  # a stalled or dead scorer ends the run
            now = time.perf_counter()
            due = min(total, int((now - record.started) * phase.rate) + 1)
            if due > count:
                chunk = ctx.messages[cursor + count : cursor + due]
                for key, _ in chunk:
                    sent_at[key] = transit_at[key] = (now, index)
                await sender.send(chunk)
                count = due
            await asyncio.sleep(TICK_S)
        record.ended = time.perf_counter()
        record.cpu_end = scorer.cpu()
        record.bench_cpu_end = cpu_seconds(bench)
        record.sent = count
        cursor += total
        if phase.drain_after:
            await sender.flush()
            while sent_at and not consumer.done():
                await asyncio.sleep(0.05)
    await sender.flush()


async def _consume(
    watcher: Watcher,
    scorer: ChildProcess,
    run: Paced,
    sent_at: dict[bytes, tuple[float, int]],
    state: dict[str, int],
    track_versions: bool,
) -> None:
    last_new = time.perf_counter()
    while state["producing"] or sent_at:
        at, records = await watcher.poll()
        new = 0
        for record in records:
            entry = sent_at.pop(record.key, None)
            if entry is None:
                continue  # a repeated result
            version = (
                orjson.loads(record.value)["model_version"] if track_versions else ""
            )
            run.results.append((at, at - entry[0], entry[1], version))
            new += 1
        if new:
            run.receipts.append(at)
            last_new = at
        elif sent_at and at - last_new > STALL_TIMEOUT_S:
            raise BenchError(
                f"no result for {STALL_TIMEOUT_S:.0f} s with {len(sent_at)} events "
                f"waiting; see {scorer.log}"
            )
        scorer.check_alive("the scorer")


async def _transit(
    reader: Watcher, run: Paced, transit_at: dict[bytes, tuple[float, int]]
) -> None:
    while True:
        at, records = await reader.poll()
        for record in records:
            entry = transit_at.pop(record.key, None)
            if entry is not None:
                run.transit.append((at - entry[0], entry[1]))


async def _sample_rss(scorer: ChildProcess, run: Paced, state: dict[str, int]) -> None:
    while True:
        run.rss.append((time.perf_counter(), state["phase"], scorer.rss()))
        await asyncio.sleep(RSS_SAMPLE_S)


async def _announce(
    ctx: Context, names: TopicNames, run: Paced, swap: SwapPlan
) -> None:
    from txrisk.control import announce, announcement

    while math.isnan(run.phases[swap.phase].started):
        await asyncio.sleep(0.01)
    delay = run.phases[swap.phase].started + swap.at_s - time.perf_counter()
    await asyncio.sleep(max(0.0, delay))
    run.announced_at = time.perf_counter()
    metadata = read_metadata(ctx.registry / swap.version)
    await announce(ctx.bootstrap, names.control, announcement("activate", metadata))


def section_latency(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    s = ctx.sizes
    phases: list[Phase] = []
    for rate in s.rates:
        phases += [
            Phase(f"warm {rate:.0f}/s", rate, s.warm_s),
            Phase(f"{rate:.0f}/s", rate, s.load_s, drain_after=True),
        ]
    run = paced(ctx, phases, "latency")
    targets = {1_000.0: 25.0, 5_000.0: 50.0}
    for index, rate in zip(range(1, len(phases), 2), s.rates, strict=True):
        latencies = run.latencies_ms(index)
        tag = f"r{rate:.0f}"
        name = f"at {rate:,.0f}/s"
        for q in (50, 95, 99):
            target = None
            if q == 99 and rate in targets:
                target = Target("<=", targets[rate], text=f"<= {targets[rate]:.0f} ms")
            figures.add(
                f"latency.{tag}.p{q}",
                3,
                f"end-to-end p{q} {name}",
                "ms",
                percentile(latencies, q),
                target,
            )
        figures.add(
            f"latency.{tag}.max",
            3,
            f"end-to-end max {name}",
            "ms",
            max(latencies, default=math.nan),
        )
        transit = run.transit_ms(index)
        for q in (50, 99):
            figures.add(
                f"latency.{tag}.transit_p{q}",
                3,
                f"  transport alone p{q} {name}: produce to fetched (default fetch)",
                "ms",
                percentile(transit, q),
            )
        own_mean, own_p99 = run.scorer_latency_ms(index)
        figures.add(
            f"latency.{tag}.scorer_mean",
            3,
            f"  scorer's own view {name}: Kafka timestamp to ack, mean",
            "ms",
            own_mean,
        )
        figures.add(
            f"latency.{tag}.scorer_p99",
            3,
            f"  scorer's own view {name}: p99 at most (histogram bucket)",
            "ms",
            own_p99,
        )
        size, batch_ms = run.batches(index)
        figures.add(
            f"latency.{tag}.batch_events",
            3,
            f"  scorer batch size {name}",
            "events",
            size,
        )
        figures.add(
            f"latency.{tag}.batch_ms",
            3,
            f"  scorer time per batch {name} (decode to encode)",
            "ms",
            batch_ms,
        )
        phase = run.phases[index]
        figures.add(
            f"latency.{tag}.sent_rate",
            3,
            f"  rate achieved by the producer {name}",
            "events/s",
            phase.rate,
        )
        figures.add(
            f"latency.{tag}.cores",
            3,
            f"  scorer cores busy {name}",
            "cores",
            phase.cores,
        )
        figures.add(
            f"latency.{tag}.bench_cores",
            3,
            f"  bench process cores busy {name} (producer, 2 consumers)",
            "cores",
            phase.bench_cores,
        )


def section_memory(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    s = ctx.sizes
    burst_rate = STEADY_RATE * BURST_FACTOR
    phases = [
        Phase("warm", STEADY_RATE, s.warm_s),
        Phase("steady", STEADY_RATE, s.memory_steady_s),
        Phase("burst", burst_rate, s.memory_burst_s),
    ]
    run = paced(ctx, phases, "memory")
    mb = 1024 * 1024
    steady = max((r for _, p, r in run.rss if p == 1), default=0) / mb
    burst = max((r for _, p, r in run.rss if p == 2), default=0) / mb
    figures.add(
        "memory.steady_peak_mb",
        6,
        f"peak RSS at {STEADY_RATE:,.0f}/s",
        "MB",
        steady,
        Target("<=", 400.0, text="<= 400 MB"),
    )
    figures.add(
        "memory.burst_peak_mb",
        6,
        f"peak RSS in a {BURST_FACTOR}x burst and its backlog",
        "MB",
        burst,
    )
    figures.add(
        "memory.burst_ratio",
        6,
        "burst peak / steady peak",
        "x",
        burst / steady,
        Target("<=", 1.5, text="<= 1.5"),
    )
    figures.add(
        "memory.burst_sent_rate",
        6,
        "  burst rate achieved by the producer",
        "events/s",
        run.phases[2].rate,
    )
    last_seen = max((at for at, _, p, _ in run.results if p == 2), default=math.nan)
    figures.add(
        "memory.backlog_s",
        6,
        "  last burst result after the burst ended",
        "s",
        last_seen - run.phases[2].ended,
    )


def section_swap(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    s = ctx.sizes
    phases = [
        Phase("warm", STEADY_RATE, s.warm_s),
        Phase("steady", STEADY_RATE, s.swap_total_s),
    ]
    run = paced(ctx, phases, "swap", SwapPlan(1, s.swap_at_s, ctx.swap_version))
    steady_from, swap_from = run.phases[1].started, run.announced_at
    swap_to = swap_from + s.swap_window_s
    swapped_at = run.first_seen(ctx.swap_version)

    def window(start: float, end: float) -> tuple[float, float, float]:
        seen = [
            (at, lat) for at, lat, p, _ in run.results if p == 1 and start <= at < end
        ]
        receipts = [start, *[at for at in run.receipts if start <= at < end], end]
        gap = max(b - a for a, b in zip(receipts, receipts[1:], strict=False))
        return (
            len(seen) / (end - start),
            percentile([lat * 1e3 for _, lat in seen], 99),
            gap,
        )

    steady_rate, steady_p99, steady_gap = window(steady_from, swap_from)
    swap_rate, swap_p99, swap_gap = window(swap_from, swap_to)
    # One batch: the mean time between the scorer's batches in steady state,
    # from its own batch counter.
    batches = metric_value(run.metrics_end, "txrisk_batch_scoring_seconds_count") - (
        metric_value(run.phases[1].metrics_start, "txrisk_batch_scoring_seconds_count")
    )
    batch_ms = (run.ended - steady_from) / batches * 1e3 if batches > 0 else math.nan
    window_s = f"{s.swap_window_s:.0f} s"
    figures.add(
        "swap.steady.rate", 7, "results/s, steady state", "events/s", steady_rate
    )
    figures.add(
        "swap.window.rate",
        7,
        f"results/s, {window_s} from the announcement",
        "events/s",
        swap_rate,
    )
    figures.add("swap.steady.p99", 7, "p99 latency, steady state", "ms", steady_p99)
    figures.add(
        "swap.window.p99",
        7,
        f"p99 latency, {window_s} from the announcement",
        "ms",
        swap_p99,
    )
    figures.add(
        "swap.steady.max_gap",
        7,
        "longest gap between results, steady",
        "ms",
        steady_gap * 1e3,
    )
    figures.add(
        "swap.window.max_gap",
        7,
        "longest gap between results, around the swap",
        "ms",
        swap_gap * 1e3,
    )
    figures.add(
        "swap.batch_ms", 7, "one batch (mean time between batches)", "ms", batch_ms
    )
    figures.add(
        "swap.extra_pause",
        7,
        "swap's longest gap minus steady longest gap",
        "ms",
        (swap_gap - steady_gap) * 1e3,
        Target("<=", bound_key="swap.batch_ms", text="<= one batch"),
    )
    figures.add(
        "swap.load_s",
        7,
        "announcement to first result of the new version",
        "s",
        swapped_at - swap_from,
    )


# --- 4. the baseline -----------------------------------------------------------


@dataclass(frozen=True)
class Hammered:
    latencies_ms: list[float]
    wall_s: float

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.wall_s


async def _hammer(
    client: httpx.AsyncClient,
    url: str,
    payloads: Sequence[bytes],
    concurrency: int,
    seconds: float,
) -> Hammered:
    """Closed loop: `concurrency` clients, each sending its next request when
    the previous one is answered, for `seconds`."""
    latencies: list[float] = []
    counter = iter(range(sys.maxsize))
    started = time.perf_counter()
    deadline = started + seconds
    headers = {"content-type": "application/json"}

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            payload = payloads[next(counter) % len(payloads)]
            sent = time.perf_counter()
            answer = await client.post(url, content=payload, headers=headers)
            if answer.status_code != 200:
                raise BenchError(
                    f"the baseline answered {answer.status_code}: {answer.text}"
                )
            latencies.append((time.perf_counter() - sent) * 1e3)

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return Hammered(latencies, time.perf_counter() - started)


async def _baseline(ctx: Context) -> tuple[Hammered, Hammered, float]:
    s = ctx.sizes
    port = free_port()
    env = python_env(
        {
            MODEL_DIR_ENV: str(ctx.registry),
            VERSION_ENV: ctx.version,
            # One native thread, as the scorer runs by default.
            "OMP_NUM_THREADS": "1",
        }
    )
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "scorer.bench_baseline:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        # No access log: one line per request would cost the baseline CPU.
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    server = ChildProcess.start(argv, env, ctx.log("baseline"))
    server.port = port
    try:
        await server.wait_ready("/health", "the baseline server")
        url = f"http://127.0.0.1:{port}/predict"
        payloads = [value for _, value in ctx.messages[:10_000]]
        limits = httpx.Limits(
            max_connections=s.baseline_concurrency,
            max_keepalive_connections=s.baseline_concurrency,
        )
        async with httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT_S) as client:
            await _hammer(client, url, payloads, 1, s.warm_s)
            single = await _hammer(client, url, payloads, 1, s.baseline_latency_s)
            cpu_before = server.cpu()
            loaded = await _hammer(
                client, url, payloads, s.baseline_concurrency, s.baseline_load_s
            )
            cpu = server.cpu() - cpu_before
        return single, loaded, cpu
    finally:
        server.stop()


def section_baseline(ctx: Context, figures: Figures, per_run: dict[str, Drain]) -> None:
    single, loaded, cpu = asyncio.run(_baseline(ctx))
    ours = _one_scorer(ctx, per_run)
    n = ctx.sizes.baseline_concurrency
    per_cpu = len(loaded.latencies_ms) / cpu if cpu > 0 else math.nan
    figures.add(
        "baseline.rps",
        4,
        f"baseline requests/s wall, {n} concurrent",
        "req/s",
        loaded.rate,
    )
    figures.add(
        "baseline.rps_per_cpu_s",
        4,
        "baseline requests per server CPU-s",
        "req/CPU-s",
        per_cpu,
    )
    for q in (50, 95, 99):
        figures.add(
            f"baseline.single.p{q}",
            4,
            f"baseline latency p{q}, one at a time",
            "ms",
            percentile(single.latencies_ms, q),
        )
    figures.add(
        "baseline.loaded.p99",
        4,
        f"baseline latency p99, {n} concurrent",
        "ms",
        percentile(loaded.latencies_ms, 99),
    )
    figures.add(
        "baseline.ours.events_per_cpu_s",
        4,
        "txrisk events per scorer CPU-s (top 3)",
        "events/CPU-s",
        ours.events_per_cpu_s,
    )
    figures.add(
        "baseline.ratio_cpu",
        4,
        "txrisk / baseline, per CPU-s",
        "x",
        ours.events_per_cpu_s / per_cpu,
        Target(">=", 10.0, text=">= 10"),
    )
    figures.add(
        "baseline.ratio_wall",
        4,
        "txrisk / baseline, per second wall",
        "x",
        ours.events_per_s / loaded.rate,
    )


RUNNERS: dict[int, Callable[[Context, Figures, dict[str, Drain]], None]] = {
    1: section_model,
    2: section_stream,
    3: section_latency,
    4: section_baseline,
    5: section_scale,
    6: section_memory,
    7: section_swap,
}


# --- report --------------------------------------------------------------------


def number(value: float) -> str:
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(figures: Figures, runs: int) -> str:
    """A Markdown table: the README pastes it as printed."""
    lines = [
        f"| figure | median of {runs} | min - max | unit | target | met |",
        "|---|---:|---:|---|---|---|",
    ]
    section = 0
    for f in figures.by_key.values():
        if f.section != section:
            section = f.section
            lines.append(f"| **{section}. {SECTIONS[section]}** | | | | | |")
        met = figures.met(f)
        verdict = "" if met is None else ("yes" if met else "**no**")
        lines.append(
            f"| {f.label} | {number(f.median)} | {number(f.low)} - {number(f.high)} "
            f"| {f.unit} | {f.target.text if f.target else ''} | {verdict} |"
        )
    return "\n".join(lines)


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the figures were measured on."""
    import aiokafka
    import fastapi
    import pandas
    import pydantic
    import sklearn
    import uvicorn

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "libraries": {
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "pandas": pandas.__version__,
            "aiokafka": aiokafka.__version__,
            "orjson": orjson.__version__,
            "pydantic": pydantic.VERSION,
            "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__,
            "httpx": httpx.__version__,
        },
    }


def describe_machine(info: dict[str, Any]) -> str:
    libraries = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    before = " ".join(f"{v:.1f}" for v in info["load_average_before"])
    after = " ".join(f"{v:.1f}" for v in info["load_average_after"])
    return (
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gb']} GB RAM, "
        f"Python {info['python']}; {libraries}; load average {before} before, "
        f"{after} after"
    )


def parse_sections(text: str) -> tuple[int, ...]:
    """`1,3,5` -> (1, 3, 5), checked against the known sections."""
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise UserError(f"--sections {text!r}: use numbers such as 1,2,5") from exc
    unknown = [n for n in chosen if n not in SECTIONS]
    if unknown or not chosen:
        raise UserError(
            f"--sections {text!r}: choose from {', '.join(map(str, SECTIONS))}"
        )
    return tuple(chosen)

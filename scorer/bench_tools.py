"""Building blocks of the benchmark: processes, a fast producer, a result watcher.

Everything here measures from outside the process being measured: a scorer or
the baseline server runs as its own process, and its CPU time and memory are
read through psutil, so the benchmark's own producer and consumer are never
counted against it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from txrisk.errors import UserError

logger = logging.getLogger(__name__)

# Loading the scorer (imports, unpickling, verifying the canary) takes a few
# seconds on an idle box; two minutes only guards a starved shared machine.
READY_TIMEOUT_S = 120.0
# A scorer that publishes nothing for this long while events are waiting has
# stalled; the benchmark stops and says which log to read.
STALL_TIMEOUT_S = 60.0
# How often readiness is asked while waiting: cheap for the scorer, and fine
# enough that a start-up figure is off by at most this much.
READY_POLL_S = 0.1
# Fetch wait of the result watcher. The embedded broker answers a fetch only
# when this wait is over if nothing was there when it arrived, so the wait
# bounds how late a result is seen; 5 ms keeps that error small at the price
# of some CPU in the benchmark process (not in the scorer).
WATCH_FETCH_WAIT_MS = 5
# Records per producer batch: large enough to amortise the client's per-call
# cost, small enough for the broker's default message size limit.
SEND_CHUNK = 2_000
# Futures the producer keeps before waiting for acknowledgements, so memory
# stays bounded during a long run.
MAX_PENDING_BATCHES = 256
HTTP_TIMEOUT_S = 30.0

Message = tuple[bytes, bytes]


class BenchError(UserError):
    """A scenario could not be measured: a process failed or stalled."""


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU time of one process (not its children)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def percentile(values: Sequence[float], q: float) -> float:
    return (
        float(np.percentile(np.asarray(values, dtype=np.float64), q))
        if values
        else math.nan
    )


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child Python process that imports this checkout."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    # The scorer runs with its defaults, whatever this shell sets; that also
    # drops a signing key, which would refuse the benchmark's unsigned copy.
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("TXRISK_")
    }
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ChildProcess:
    """A measured child process (a scorer or the baseline server)."""

    popen: subprocess.Popen[bytes]
    process: psutil.Process
    log: Path
    started_at: float
    port: int | None = None
    ready_at: float | None = None

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log: Path) -> ChildProcess:
        started = time.perf_counter()
        popen = subprocess.Popen(
            argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        return cls(popen, psutil.Process(popen.pid), log, started)

    def cpu(self) -> float:
        try:
            return cpu_seconds(self.process)
        except psutil.Error:
            return math.nan

    def rss(self) -> int:
        try:
            return int(self.process.memory_info().rss)
        except psutil.Error:
            return 0

    def check_alive(self, what: str) -> None:
        if self.popen.poll() is not None:
            raise BenchError(
                f"{what} exited with code {self.popen.returncode}; its log "
                f"{self.log} ends:\n{log_tail(self.log)}"
            )

    async def wait_port(self, pattern: str, what: str) -> int:
        """The port the process logs it listens on (`pattern` captures it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive(what)
            match = regex.search(self.log.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return self.port
            await asyncio.sleep(READY_POLL_S)
        raise BenchError(
            f"{what} did not listen within {READY_TIMEOUT_S:.0f} s; see {self.log}"
        )

    async def wait_ready(self, path: str, what: str) -> float:
        """Poll `GET path` until it answers 200; returns the seconds since start."""
        assert self.port is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            while time.monotonic() < deadline:
                self.check_alive(what)
                if await self.is_ready(client, path):
                    return self.seconds_to_ready()
                await asyncio.sleep(READY_POLL_S)
        raise BenchError(
            f"{what} was not ready within {READY_TIMEOUT_S:.0f} s; see {self.log}"
        )

    async def is_ready(self, client: httpx.AsyncClient, path: str) -> bool:
        if self.ready_at is not None:
            return True
        try:
            answer = await client.get(f"http://127.0.0.1:{self.port}{path}")
        except httpx.HTTPError:
            return False
        if answer.status_code == 200:
            self.ready_at = time.perf_counter()
            return True
        return False

    def seconds_to_ready(self) -> float:
        assert self.ready_at is not None
        return self.ready_at - self.started_at

    async def get_text(self, path: str) -> str:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            answer = await client.get(f"http://127.0.0.1:{self.port}{path}")
            answer.raise_for_status()
            return answer.text

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the scorer finishes its batch), then SIGKILL after `timeout_s`."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop in %.0f s; killing it", self.log, timeout_s
                )
                self.popen.kill()
                self.popen.wait()


def start_scorer(env: dict[str, str], log: Path) -> ChildProcess:
    return ChildProcess.start(
        [sys.executable, "-m", "scorer", "run"], python_env(env), log
    )


async def scorer_ready(scorer: ChildProcess) -> float:
    await scorer.wait_port(r"http listening host=\S+ port=(\d+)", "the scorer")
    return await scorer.wait_ready("/readyz", "the scorer")


def metric_value(text: str, name: str) -> float:
    """A label-free sample of Prometheus text output (NaN if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return math.nan


def histogram_quantile(before: str, after: str, name: str, q: float) -> float:
    """The upper bound of the bucket holding quantile `q` of the observations a
    label-free Prometheus histogram gained between two scrapes (NaN if none)."""

    def buckets(text: str) -> dict[float, float]:
        found = {}
        prefix = f'{name}_bucket{{le="'
        for line in text.splitlines():
            if line.startswith(prefix):
                bound, count = line[len(prefix) :].split('"} ')
                found[float(bound)] = float(count)
        return found

    start, end = buckets(before), buckets(after)
    gained = sorted((bound, end[bound] - start.get(bound, 0.0)) for bound in end)
    if not gained or gained[-1][1] <= 0:
        return math.nan
    total = gained[-1][1]
    return next(bound for bound, count in gained if count >= q * total)


class Sender:
    """Hands messages to Kafka in batches, one per partition, keyed like Kafka does.

    The producer's batch API costs a fraction of one `send` per message, so
    the benchmark can produce at the burst rate on the same two cores as the
    scorer and the broker.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self._producer = producer
        self._topic = topic
        self._all = list(range(partitions))
        self._partitioner = DefaultPartitioner()
        self._pending: list[asyncio.Future[object]] = []

    async def send(self, messages: Sequence[Message]) -> None:
        by_partition: dict[int, list[Message]] = {}
        for key, value in messages:
            partition = self._partitioner(key, self._all, self._all)
            by_partition.setdefault(partition, []).append((key, value))
        for partition, chunk in by_partition.items():
            for start in range(0, len(chunk), SEND_CHUNK):
                await self._send_batch(partition, chunk[start : start + SEND_CHUNK])
        if len(self._pending) > MAX_PENDING_BATCHES:
            await self.flush()

    async def _send_batch(self, partition: int, chunk: Sequence[Message]) -> None:
        remaining = list(chunk)
        while remaining:
            batch = self._producer.create_batch()
            taken = 0
            for key, value in remaining:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    break  # batch full: the rest goes in the next one
                taken += 1
            if taken == 0:
                raise BenchError("a single message does not fit a producer batch")
            batch.close()
            future = await self._producer.send_batch(
                batch, self._topic, partition=partition
            )
            self._pending.append(future)
            remaining = remaining[taken:]

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)


def producer(bootstrap: str) -> AIOKafkaProducer:
    # linger 0: a paced event is sent at once, as a gateway would; acks=all as
    # the replay tool and the scorer use.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=1024 * 1024
    )


async def prefill(
    bootstrap: str, topic: str, partitions: int, messages: Sequence[Message]
) -> None:
    """Send every message and wait until the broker has acknowledged all."""
    client = producer(bootstrap)
    await client.start()
    try:
        sender = Sender(client, topic, partitions)
        for start in range(0, len(messages), 10 * SEND_CHUNK):
            await sender.send(messages[start : start + 10 * SEND_CHUNK])
        await sender.flush()
    finally:
        await client.stop()


@dataclass
class Watcher:
    """Reads a result topic from its start, outside any consumer group."""

    consumer: AIOKafkaConsumer
    seen: set[bytes] = field(default_factory=set)
    duplicates: int = 0

    @classmethod
    async def open(
        cls,
        bootstrap: str,
        topic: str,
        partitions: int,
        fetch_max_wait_ms: int | None = WATCH_FETCH_WAIT_MS,
    ) -> Watcher:
        """`fetch_max_wait_ms=None`: aiokafka's default, as the scorer uses."""
        options = (
            {}
            if fetch_max_wait_ms is None
            else {"fetch_max_wait_ms": fetch_max_wait_ms}
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            # Results are ~400 bytes; a larger fetch only lets one poll hold
            # more of a drain at once.
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **options,
        )
        await consumer.start()
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        return cls(consumer)

    async def poll(self, timeout_ms: int = 50) -> tuple[float, list[ConsumerRecord]]:
        """The records of one fetch and the time they were seen."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        now = time.perf_counter()
        records = [record for records in batch.values() for record in records]
        for record in records:
            if record.key in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(record.key)
        return now, records

    async def close(self) -> None:
        await self.consumer.stop()


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Drop a scenario's topics: the embedded broker keeps every message in memory."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.delete_topics(topics)
    except KafkaError as exc:
        logger.warning("could not delete topics %s: %s", topics, exc)
    finally:
        await admin.close()


def broker_process() -> psutil.Process | None:
    """The embedded broker, a child of this process, for its CPU time."""
    for child in psutil.Process().children():
        try:
            if child.name().startswith("tansu"):
                return child
        except psutil.Error:
            continue
    return None

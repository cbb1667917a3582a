"""Counting every event of a fault scenario: sent, results, dead letters,
duplicates, lost; and the scorer plumbing the scenarios share."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from streams import PARTITIONS, Topics

from scorer.models import ModelManager
from scorer.service import ScorerService
from scorer.settings import ScorerSettings
from txrisk.broker import EmbeddedBroker

Message = tuple[bytes | None, bytes | None]

# Fields that differ between two deliveries of the same outcome.
VOLATILE = ("scored_at", "failed_at", "_offset")
# The producer the tests send with takes messages up to 16 MiB, above the
# 10 MB hostile payloads (the scorer's own producer keeps Kafka's 1 MiB).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass
class Tally:
    """What came out for what went in, by message identity."""

    scenario: str
    sent: int
    results: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"RELIABILITY {self.scenario}: sent={self.sent} results={self.results} "
            f"dead_letters={self.dead_letters} duplicates={self.duplicates} "
            f"lost={len(self.lost)}"
        )

    def check(self, max_duplicates: int = 0) -> None:
        """Print the summary line; nothing lost, nothing foreign, duplicates
        within the bound and identical to the first delivery."""
        print(self.line(), flush=True)
        assert not self.lost, f"{len(self.lost)} lost, e.g. {self.lost[:5]}"
        assert not self.unexpected, f"outputs for unsent ids: {self.unexpected[:5]}"
        assert not self.differing, f"duplicates that differ: {self.differing[:5]}"
        assert self.duplicates <= max_duplicates, self.line()


def tally(
    scenario: str,
    expected: Iterable[str],
    results: Sequence[dict[str, Any]],
    dead_letters: Sequence[dict[str, Any]] = (),
) -> Tally:
    """Match outputs to `expected` ids: a result by its tx id, a dead letter by
    its key (or by `@partition:offset` when it has none)."""
    wanted = Counter(expected)
    found: dict[str, list[dict[str, Any]]] = {}
    for document in results:
        found.setdefault(document["tx_id"], []).append(document)
    for document in dead_letters:
        source = document["source"]
        ident = document["key"] or f"@{source['partition']}:{source['offset']}"
        found.setdefault(ident, []).append(document)

    out = Tally(scenario, sent=sum(wanted.values()))
    out.results, out.dead_letters = len(results), len(dead_letters)
    for ident, documents in found.items():
        if ident not in wanted:
            out.unexpected.append(ident)
            continue
        out.duplicates += max(0, len(documents) - wanted[ident])
        first = _stable(documents[0])
        if any(_stable(d) != first for d in documents[1:]):
            out.differing.append(ident)
    out.lost = [ident for ident in wanted if len(found.get(ident, ())) < wanted[ident]]
    return out


def _stable(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in VOLATILE}


def send_recorded(
    broker: EmbeddedBroker, topic: str, messages: Sequence[Message]
) -> list[tuple[int, int]]:
    """Send and return each message's (partition, offset)."""

    async def _send() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers,
            linger_ms=5,
            max_request_size=MAX_REQUEST_BYTES,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=key, value=value)
                for key, value in messages
            ]
            metadata = await asyncio.gather(*futures)
            return [(m.partition, m.offset) for m in metadata]
        finally:
            await producer.stop()

    return asyncio.run(_send())


class Tail:
    """Reads topics from the beginning in a background thread, keeping every
    document, so a test can wait for counts while the scorer runs."""

    def __init__(self, broker: EmbeddedBroker, topics: Sequence[str]) -> None:
        self._broker, self._topics = broker, list(topics)
        self._lock = threading.Lock()
        self.found: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), daemon=True
        )

    def __enter__(self) -> Tail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # The read loop polls every 200 ms; five seconds covers a slow stop.
        self._thread.join(timeout=5)

    def count(self, topic: str | None = None) -> int:
        with self._lock:
            if topic is not None:
                return len(self.found[topic])
            return sum(len(v) for v in self.found.values())

    def snapshot(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.found[topic])

    def wait_for(self, count: int, timeout_s: float, topic: str | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count(topic) >= count:
                return True
            time.sleep(0.1)
        return False

    def settle(self, quiet_s: float, timeout_s: float = 60.0) -> None:
        """Wait until nothing new arrived for `quiet_s` (late duplicates)."""
        deadline = time.monotonic() + timeout_s
        last, since = self.count(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.count()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._broker.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(t, p) for t in self._topics for p in range(PARTITIONS)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
                with self._lock:
                    for tp, records in batch.items():
                        for record in records:
                            document = orjson.loads(record.value)
                            document["_offset"] = record.offset
                            self.found[tp.topic].append(document)
        finally:
            await consumer.stop()


LISTENING = re.compile(r"http listening host=\S+ port=(\d+)")


def wait_for_log(
    log: Path,
    text: str,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
) -> str:
    """The log once `text` is in it; fails early if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"scorer exited {process.returncode}:\n{content[-3000:]}"
            )
        time.sleep(0.1)
    raise AssertionError(
        f"{text!r} not in the log after {timeout_s}s:\n{content[-3000:]}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / 100.0  # USER_HZ is 100 on Linux


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def settings_for(
    broker: EmbeddedBroker, registry: Path, topics: Topics, **overrides: Any
) -> ScorerSettings:
    """Scorer settings for an in-process service on the test's topics."""
    return ScorerSettings(
        bootstrap_servers=broker.bootstrap_servers,
        model_dir=registry,
        input_topic=topics.input,
        output_topic=topics.output,
        dead_letter_topic=topics.dead_letter,
        control_topic=topics.control,
        group_id=topics.group,
        **overrides,
    )


class InProcessScorer:
    """A ScorerService on its own event loop in a background thread, for
    scenarios that patch a stage of the batch cycle."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = settings
        self.service: ScorerService | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        models = ModelManager(self.settings.model_dir)
        models.load_initial()
        self.service = ScorerService(self.settings, models)
        try:
            await self.service.start()
            self._started.set()
            await self.service.run(self._stop)
        finally:
            await self.service.close()
            models.close()

    def start(self) -> InProcessScorer:
        self._thread.start()
        # Startup is a model load and two Kafka connections.
        assert self._started.wait(60), "the in-process scorer did not start"
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        if (
            self._loop is not None
            and self._stop is not None
            and self._thread.is_alive()
        ):
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the in-process scorer did not stop"

    def wait_done(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


@contextmanager
def in_process(settings: ScorerSettings) -> Iterator[InProcessScorer]:
    scorer = InProcessScorer(settings).start()
    try:
        yield scorer
    finally:
        scorer.stop()

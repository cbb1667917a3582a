"""Model updates through the control topic, on the embedded broker, under load."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from streams import Topics, gateway_events, read_all, send, start_scorer, stop

from trainer.train import TrainOptions, train
from txrisk.broker import EmbeddedBroker
from txrisk.bundle import METADATA_FILE, MODEL_FILE, read_metadata, signature
from txrisk.contracts import ControlMessage
from txrisk.control import announce, announcement
from txrisk.spec import load_spec

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def two_versions(
    tmp_path_factory: pytest.TempPathFactory, registry: Path, synthetic_file: Path
) -> Path:
    """A registry with v1 (the session model) and v2 (another seed)."""
    folder = tmp_path_factory.mktemp("two-versions")
    shutil.copytree(registry / "v1", folder / "v1")
    train(
        synthetic_file, load_spec("gateway"), folder, TrainOptions(seed=5, version="v2")
    )
    return folder


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, bytes]]:
    return gateway_events(tmp_path_factory.mktemp("swap-events"), 9_000, seed=31)


def activate(
    broker: EmbeddedBroker, topics: Topics, registry: Path, version: str
) -> None:
    message = announcement("activate", read_metadata(registry / version))
    asyncio.run(announce(broker.bootstrap_servers, topics.control, message))


def raw_announce(broker: EmbeddedBroker, topics: Topics, **fields: str) -> None:
    message = ControlMessage(action="activate", **fields)  # type: ignore[arg-type]
    asyncio.run(announce(broker.bootstrap_servers, topics.control, message))


def wait_for_log(log: Path, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{text!r} never appeared in the scorer log:\n{log.read_text()}"
    )


class SteadyLoad:
    """Sends events in small chunks from a thread until told to stop."""

    def __init__(self, broker: EmbeddedBroker, topic: str, events: list) -> None:
        self._broker, self._topic, self._events = broker, topic, events
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_sent(self, count: int) -> None:
        while self.sent < count and self._thread.is_alive():
            time.sleep(0.05)

    def finish(self) -> int:
        """Send everything that is left, then stop."""
        self._thread.join()
        return self.sent

    def _run(self) -> None:
        for start in range(0, len(self._events), 250):
            chunk = self._events[start : start + 250]
            send(self._broker, self._topic, chunk)
            self.sent += len(chunk)
            time.sleep(0.05)


def versions_by_partition(results: list[dict]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for result in results:
        found.setdefault(result["_partition"], []).append(result["model_version"])
    return found


def test_swap_under_load_is_atomic_and_loses_nothing(
    broker: EmbeddedBroker, two_versions: Path, events: list, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    log = tmp_path / "scorer.log"
    activate(broker, topics, two_versions, "v1")
    scorer = start_scorer(broker, two_versions, topics, log)
    try:
        wait_for_log(log, "partitions assigned")
        with SteadyLoad(broker, topics.input, events[:6_000]) as load:
            load.wait_sent(2_000)
            activate(broker, topics, two_versions, "v2")
            wait_for_log(log, "model swapped from=v1 to=v2")
            load.wait_sent(4_000)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "trainer",
                    "rollback",
                    "--model-dir",
                    str(two_versions),
                    "--to",
                    "v1",
                    "--bootstrap-servers",
                    broker.bootstrap_servers,
                    "--control-topic",
                    topics.control,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            wait_for_log(log, "model swapped from=v2 to=v1")
            sent = load.finish()
        found = read_all(broker, [topics.output], sent, settle_s=2)
    finally:
        assert stop(scorer) == 0, log.read_text()

    results = found[topics.output]
    ids = [r["tx_id"] for r in results]
    assert len(ids) == len(set(ids)) == sent  # none missing, none twice
    for partition, versions in versions_by_partition(results).items():
        # In each partition (same key -> same partition in and out), results
        # switch v1 -> v2 -> v1 exactly once each way: no batch mixes versions.
        # A partition whose first events arrive after a swap starts later in
        # that sequence, so any run of it is fine; a return to an earlier
        # version out of turn is not.
        switches = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        allowed = (["v1", "v2", "v1"], ["v1", "v2"], ["v2", "v1"], ["v1"], ["v2"])
        assert switches in allowed, (partition, switches)
    assert {r["model_version"] for r in results} == {"v1", "v2"}
    assert results and versions_by_partition(results)

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "models",
            "--model-dir",
            str(two_versions),
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--control-topic",
            topics.control,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    marked = [line for line in listed.stdout.splitlines() if line.startswith("* v")]
    assert len(marked) == 1 and marked[0].split()[1] == "v1"


class _Evil:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def bad_registry(source: Path, target: Path, marker: Path) -> dict[str, str]:
    """Copies of v1/v2 plus broken versions; returns what each announcement uses."""
    shutil.copytree(source, target)
    v2 = read_metadata(target / "v2")

    corrupt = target / "corrupt"
    shutil.copytree(target / "v2", corrupt)
    meta = read_metadata(corrupt).model_copy(update={"version": "corrupt"})
    (corrupt / METADATA_FILE).write_text(meta.model_dump_json())
    data = bytearray((corrupt / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / MODEL_FILE).write_bytes(bytes(data))

    evil = target / "evil"
    evil.mkdir()
    (evil / MODEL_FILE).write_bytes(pickle.dumps(_Evil(marker)))
    meta = v2.model_copy(update={"version": "evil"})
    (evil / METADATA_FILE).write_text(meta.model_dump_json())

    outside = target.parent / f"{target.name}-outside"
    shutil.copytree(target / "v2", outside)
    (target / "escape").symlink_to(outside)

    return {
        "sha_v1": read_metadata(target / "v1").model_sha256,
        "sha_v2": v2.model_sha256,
    }


def test_bad_candidates_are_refused_and_the_old_model_keeps_scoring(
    broker: EmbeddedBroker,
    two_versions: Path,
    events: list,
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    marker = tmp_path / "EVIL_RAN"
    shas = bad_registry(two_versions, registry, marker)
    topics = Topics.fresh(broker)
    log = tmp_path / "scorer.log"
    activate(broker, topics, registry, "v1")
    scorer = start_scorer(broker, registry, topics, log)
    try:
        wait_for_log(log, "partitions assigned")
        with SteadyLoad(broker, topics.input, events[:3_000]) as load:
            load.wait_sent(500)
            cases = [
                (
                    "corrupt",
                    read_metadata(registry / "corrupt").model_sha256,
                    "does not match the metadata",
                ),
                ("v2", shas["sha_v1"], "does not match the announced"),
                ("../v2", shas["sha_v2"], "not a plain name"),
                ("escape", shas["sha_v2"], "outside the registry"),
                ("evil", shas["sha_v2"], "does not match the metadata"),
                ("v404", shas["sha_v2"], "not in the registry"),
            ]
            for version, sha256, reason in cases:
                raw_announce(broker, topics, version=version, sha256=sha256)
                wait_for_log(log, f"model refused version={version} serving=v1")
                line = next(
                    entry
                    for entry in log.read_text().splitlines()
                    if f"model refused version={version} " in entry
                )
                assert reason in line, line
            sent = load.finish()
        found = read_all(broker, [topics.output], sent, settle_s=1)
    finally:
        assert stop(scorer) == 0

    assert not marker.exists(), "a refused pickle was unpickled"
    results = found[topics.output]
    assert len({r["tx_id"] for r in results}) == sent
    assert {r["model_version"] for r in results} == {"v1"}
    assert "model swapped" not in log.read_text()


def test_with_a_key_unsigned_bundles_are_refused(
    broker: EmbeddedBroker, two_versions: Path, events: list, tmp_path: Path
) -> None:
    key = b"test-signing-key"
    registry = tmp_path / "registry"
    shutil.copytree(two_versions, registry)
    signed = read_metadata(registry / "v1")
    signed = signed.model_copy(update={"signature": signature(signed, key)})
    (registry / "v1" / METADATA_FILE).write_text(signed.model_dump_json())
    forged = read_metadata(registry / "v2").model_copy(update={"signature": "0" * 64})

    topics = Topics.fresh(broker)
    log = tmp_path / "scorer.log"
    scorer = start_scorer(
        broker, registry, topics, log, extra_env={"TXRISK_MODEL_KEY": key.decode()}
    )
    try:
        # v2 is newer but unsigned: startup itself falls back to signed v1.
        wait_for_log(log, "model loaded version=v1")
        assert "model refused version=v2" in log.read_text()
        activate(broker, topics, registry, "v2")
        wait_for_log(log, "unsigned and a signing key is configured")

        (registry / "v2" / METADATA_FILE).write_text(forged.model_dump_json())
        activate(broker, topics, registry, "v2")
        wait_for_log(log, "signature does not verify")

        send(broker, topics.input, events[:200])
        found = read_all(broker, [topics.output], 200, settle_s=1)
    finally:
        assert stop(scorer) == 0
    assert {r["model_version"] for r in found[topics.output]} == {"v1"}


def test_two_replicas_both_swap(
    broker: EmbeddedBroker, two_versions: Path, events: list, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    activate(broker, topics, two_versions, "v1")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    scorers = [start_scorer(broker, two_versions, topics, log) for log in logs]
    try:
        for log in logs:
            wait_for_log(log, "partitions assigned")
        activate(broker, topics, two_versions, "v2")
        for log in logs:
            wait_for_log(log, "model swapped from=v1 to=v2")
        send(broker, topics.input, events[:1_000])
        found = read_all(broker, [topics.output], 1_000, settle_s=1)
    finally:
        for scorer in scorers:
            assert stop(scorer) == 0
    assert {r["model_version"] for r in found[topics.output]} == {"v2"}


def test_shadow_scores_go_to_the_shadow_topic_only(
    broker: EmbeddedBroker, two_versions: Path, events: list, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    shadow_topic = f"shadow-{topics.group}"
    from txrisk.broker import TopicPlan, create_topics

    asyncio.run(create_topics(broker.bootstrap_servers, [TopicPlan(shadow_topic, 4)]))
    activate(broker, topics, two_versions, "v1")
    message = announcement("shadow", read_metadata(two_versions / "v2"))
    asyncio.run(announce(broker.bootstrap_servers, topics.control, message))
    log = tmp_path / "scorer.log"
    scorer = start_scorer(
        broker,
        two_versions,
        topics,
        log,
        extra_env={"TXRISK_SHADOW_TOPIC": shadow_topic},
    )
    try:
        wait_for_log(log, "shadow loaded version=v2")
        send(broker, topics.input, events[:500])
        found = read_all(broker, [topics.output, shadow_topic], 1_000, settle_s=1)
    finally:
        assert stop(scorer) == 0
    assert {r["model_version"] for r in found[topics.output]} == {"v1"}
    shadows = found[shadow_topic]
    assert len(shadows) == 500
    assert {s["model_version"] for s in shadows} == {"v2"}
    assert {s["active_version"] for s in shadows} == {"v1"}
    by_id = {r["tx_id"]: r["fraud_probability"] for r in found[topics.output]}
    assert all(s["active_probability"] == by_id[s["tx_id"]] for s in shadows)

"""A model directory that cannot be read at startup, and a swap whose file
vanishes while it loads: a clear error, and a running scorer keeps its model."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliability.ledger import Tail, send_recorded, tally, wait_for_log
from streams import Topics, gateway_events, start_scorer, stop

import txrisk.bundle
from scorer.models import ModelManager
from txrisk.broker import EmbeddedBroker
from txrisk.bundle import METADATA_FILE, MODEL_FILE, read_metadata
from txrisk.control import announce, announcement

pytestmark = pytest.mark.broker


def copy_as(registry: Path, target: Path, version: str) -> None:
    """v1's bundle under another version name (same model file and sha256)."""
    shutil.copytree(registry / "v1", target / version)
    meta = read_metadata(target / version).model_copy(update={"version": version})
    (target / version / METADATA_FILE).write_text(meta.model_dump_json())


def unreadable_registries(registry: Path, tmp_path: Path) -> dict[str, Path]:
    """Model directories that cannot be served, each a different way."""
    a_file = tmp_path / "registry-is-a-file"
    a_file.write_text("not a directory")

    model_is_a_dir = tmp_path / "model-is-a-directory"
    copy_as(registry, model_is_a_dir, "v1")
    (model_is_a_dir / "v1" / MODEL_FILE).unlink()
    (model_is_a_dir / "v1" / MODEL_FILE).mkdir()

    garbled = tmp_path / "metadata-garbled"
    copy_as(registry, garbled, "v1")
    (garbled / "v1" / METADATA_FILE).write_bytes(b"\xff\x00 not json")

    return {
        "is a file": a_file,
        "cannot read": model_is_a_dir,
        "holds no model bundle": garbled,
    }


def test_unreadable_model_directory_is_one_clear_line(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    for phrase, folder in unreadable_registries(registry, tmp_path).items():
        done = subprocess.run(
            [sys.executable, "-m", "scorer", "run"],
            env=topics.env(broker, folder),
            capture_output=True,
            timeout=120,
        )
        stderr = done.stderr.decode()
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert done.returncode == 2, (phrase, stderr)
        assert len(errors) == 1 and str(folder) in errors[0], (phrase, stderr)
        assert "Traceback" not in stderr, stderr
        print(f"unreadable model dir ({phrase}): {errors[0]}", flush=True)


def test_model_file_vanishing_mid_load_keeps_the_serving_model(
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "registry"
    copy_as(registry, folder, "v1")
    copy_as(registry, folder, "v2")
    models = ModelManager(folder)
    models.load_initial("v1")

    real = txrisk.bundle.file_sha256

    def hash_then_vanish(path: Path) -> str:
        # The checksum passes, then the file is gone before it is unpickled.
        digest = real(path)
        if path.parent.name == "v2":
            path.unlink()
        return digest

    monkeypatch.setattr(txrisk.bundle, "file_sha256", hash_then_vanish)
    caplog.set_level(logging.INFO, logger="scorer.models")
    try:
        asyncio.run(
            models.apply(announcement("activate", read_metadata(folder / "v2")))
        )
    finally:
        models.close()
    assert models.active.version == "v1"
    assert models.last_refusal is not None and models.last_refusal.version == "v2"
    assert "model refused version=v2 serving=v1" in caplog.text
    assert "No such file" in models.last_refusal.reason, models.last_refusal.reason


def test_swap_whose_bundle_is_removed_under_load_keeps_scoring(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "registry"
    copy_as(registry, folder, "v1")
    copy_as(registry, folder, "v2")
    v2 = read_metadata(folder / "v2")
    topics = Topics.fresh(broker)
    log = tmp_path / "scorer.log"
    events = gateway_events(tmp_path, 3_000, seed=78)
    # v1 serves (the control topic's history says so), v2 is announced later.
    asyncio.run(
        announce(
            broker.bootstrap_servers,
            topics.control,
            announcement("activate", read_metadata(folder / "v1")),
        )
    )
    scorer = start_scorer(broker, folder, topics, log)
    try:
        wait_for_log(log, "partitions assigned", 60, scorer)
        with Tail(broker, [topics.output, topics.dead_letter]) as tail:
            send_recorded(broker, topics.input, events[:1_500])
            asyncio.run(
                announce(
                    broker.bootstrap_servers,
                    topics.control,
                    announcement("activate", v2),
                )
            )
            shutil.rmtree(folder / "v2")  # an operator's clean-up racing the swap
            wait_for_log(log, "model refused version=v2 serving=v1", 60, scorer)
            send_recorded(broker, topics.input, events[1_500:])
            assert tail.wait_for(len(events), timeout_s=90), log.read_text()[-3000:]
            tail.settle(quiet_s=2)
            results = tail.snapshot(topics.output)
            letters = tail.snapshot(topics.dead_letter)
    finally:
        assert stop(scorer) == 0, log.read_text()[-3000:]

    assert {r["model_version"] for r in results} == {"v1"}
    counted = tally(
        "swap file removed mid-swap", (k.decode() for k, _ in events), results, letters
    )
    counted.check()

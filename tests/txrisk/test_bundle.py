"""Unit tests of model bundles: save/load, integrity checks, the registry listing.

Each test works on its own copy of the session registry's bundle `v1`, so the
session fixture stays intact for the other test modules.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn

from trainer.data import load_dataset, to_events
from txrisk.bundle import (
    METADATA_FILE,
    MODEL_FILE,
    BundleMetadata,
    file_sha256,
    list_versions,
    load_bundle,
    read_metadata,
    save_bundle,
)
from txrisk.errors import BundleError, UserError

Metadata = dict[str, Any]


@pytest.fixture
def reg(tmp_path: Path, registry: Path) -> Path:
    """A private registry holding a copy of the session bundle v1."""
    folder = tmp_path / "registry"
    folder.mkdir()
    shutil.copytree(registry / "v1", folder / "v1")
    return folder


@pytest.fixture(scope="module")
def sample_rows(
    synthetic_file: Path, model_meta: BundleMetadata
) -> list[dict[str, Any]]:
    dataset = load_dataset(synthetic_file, model_meta.spec)
    return to_events(dataset, model_meta.spec, np.arange(0, 20_000, 97))


def edit_metadata(folder: Path, change: Callable[[Metadata], None]) -> None:
    path = folder / METADATA_FILE
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


def copy_bundle(reg: Path, version: str, **fields: Any) -> Path:
    """Copy v1 to `version`, renaming it in its metadata and setting `fields`."""
    folder = reg / version
    shutil.copytree(reg / "v1", folder)
    edit_metadata(folder, lambda doc: doc.update({"version": version, **fields}))
    return folder


def refuses_before_unpickling(
    monkeypatch: pytest.MonkeyPatch, reg: Path, version: str, match: str, **kwargs: Any
) -> str:
    """load_bundle raises BundleError(match) without ever calling joblib.load."""

    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError("joblib.load was called on an unverified model file")

    monkeypatch.setattr("txrisk.bundle.joblib.load", forbidden)
    with pytest.raises(BundleError, match=match) as caught:
        load_bundle(reg, version, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# ------------------------------------------------------------------ round trip


def test_loaded_bundle_is_verified_and_complete(
    reg: Path, model_meta: BundleMetadata
) -> None:
    bundle = load_bundle(reg, "v1")
    assert bundle.version == "v1"
    assert bundle.metadata == model_meta
    assert bundle.path == reg / "v1"
    assert bundle.spec.name == "crypto-gateway"
    assert bundle.metadata.model_sha256 == file_sha256(reg / "v1" / MODEL_FILE)
    assert bundle.metadata.canary is not None
    assert len(bundle.metadata.canary.events) == 32
    np.testing.assert_allclose(
        bundle.predict_proba(bundle.metadata.canary.events),
        bundle.metadata.canary.probabilities,
        rtol=0,
        atol=1e-12,
    )


def test_save_load_round_trip_gives_identical_probabilities(
    reg: Path, tmp_path: Path, sample_rows: list[dict[str, Any]]
) -> None:
    original = load_bundle(reg, "v1")
    fields = original.metadata.model_dump(exclude={"model_sha256", "signature"})
    other = tmp_path / "other-registry"

    saved = save_bundle(other, original.pipeline, {**fields, "version": "copy"})
    assert saved.model_sha256 == file_sha256(other / "copy" / MODEL_FILE)
    assert read_metadata(other / "copy") == saved
    assert sorted(p.name for p in other.iterdir()) == ["copy"]  # no staging left

    reloaded = load_bundle(other, "copy")
    assert len(sample_rows) > 200
    assert np.array_equal(
        reloaded.predict_proba(sample_rows), original.predict_proba(sample_rows)
    )
    assert reloaded.metadata.model_dump(
        exclude={"version", "model_sha256", "signature"}
    ) == (
        original.metadata.model_dump(exclude={"version", "model_sha256", "signature"})
    )


def test_save_refuses_an_existing_version(reg: Path) -> None:
    bundle = load_bundle(reg, "v1")
    before = (
        file_sha256(reg / "v1" / MODEL_FILE),
        (reg / "v1" / METADATA_FILE).read_bytes(),
    )
    fields = bundle.metadata.model_dump(exclude={"model_sha256", "signature"})

    with pytest.raises(BundleError, match=r"version 'v1' already exists"):
        save_bundle(reg, bundle.pipeline, fields)

    after = (
        file_sha256(reg / "v1" / MODEL_FILE),
        (reg / "v1" / METADATA_FILE).read_bytes(),
    )
    assert after == before
    assert sorted(p.name for p in reg.iterdir()) == ["v1"]


def test_save_leaves_nothing_behind_when_metadata_is_invalid(reg: Path) -> None:
    bundle = load_bundle(reg, "v1")
    fields = bundle.metadata.model_dump(exclude={"model_sha256", "signature"})
    with pytest.raises(Exception, match=r"threshold"):
        save_bundle(reg, bundle.pipeline, {**fields, "version": "v2", "threshold": 1.5})
    assert sorted(p.name for p in reg.iterdir()) == ["v1"]


@pytest.mark.parametrize("version", ["a b", "../escape", "x/y"])
def test_save_refuses_a_bad_version_name_with_a_bundle_error(
    reg: Path, version: str
) -> None:
    bundle = load_bundle(reg, "v1")
    fields = bundle.metadata.model_dump(exclude={"model_sha256", "signature"})
    try:
        with pytest.raises(BundleError, match=r"version"):
            save_bundle(reg, bundle.pipeline, {**fields, "version": version})
    finally:
        assert sorted(p.name for p in reg.iterdir()) == ["v1"]


# ------------------------------------------------------------------ tampering


def test_changed_model_bytes_are_refused(
    reg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = reg / "v1" / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    message = refuses_before_unpickling(
        monkeypatch, reg, "v1", r"sha256 .* does not match"
    )
    assert str(model) in message


def test_appended_model_bytes_are_refused(
    reg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (reg / "v1" / MODEL_FILE).open("ab") as handle:
        handle.write(b"\x00")
    refuses_before_unpickling(monkeypatch, reg, "v1", r"changed or corrupted")


def test_edited_metadata_sha_is_refused(
    reg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_metadata(reg / "v1", lambda doc: doc.update(model_sha256="0" * 64))
    refuses_before_unpickling(
        monkeypatch, reg, "v1", r"does not match the metadata's 000000"
    )


def test_malformed_metadata_sha_is_refused(
    reg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_metadata(reg / "v1", lambda doc: doc.update(model_sha256="not-a-sha"))
    refuses_before_unpickling(
        monkeypatch, reg, "v1", r"invalid metadata at model_sha256"
    )


class _RunsCode:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (self.command,))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_RunsCode(f"touch {marker}"))


def test_the_evil_pickle_really_runs_code(tmp_path: Path) -> None:
    # Proof that the payload used below is live: loading it creates its marker.
    probe = tmp_path / "PROBE"
    pickle.loads(evil_pickle(probe))  # noqa: S301 - deliberately, on our own bytes
    assert probe.exists()


def test_code_running_pickle_with_wrong_sha_is_never_loaded(
    reg: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    (reg / "v1" / MODEL_FILE).write_bytes(evil_pickle(marker))
    with pytest.raises(BundleError, match=r"sha256 .* does not match"):
        load_bundle(reg, "v1")
    assert not marker.exists()


def test_code_running_pickle_not_matching_the_announcement_is_never_loaded(
    reg: Path, tmp_path: Path
) -> None:
    # Metadata rewritten to match the evil file: the announced sha still differs.
    marker = tmp_path / "MARKER"
    good_sha = file_sha256(reg / "v1" / MODEL_FILE)
    (reg / "v1" / MODEL_FILE).write_bytes(evil_pickle(marker))
    evil_sha = file_sha256(reg / "v1" / MODEL_FILE)
    edit_metadata(reg / "v1", lambda doc: doc.update(model_sha256=evil_sha))
    with pytest.raises(BundleError, match=r"does not match the announced"):
        load_bundle(reg, "v1", expected_sha256=good_sha)
    assert not marker.exists()


def test_announced_sha_of_an_intact_bundle_loads(reg: Path) -> None:
    sha = file_sha256(reg / "v1" / MODEL_FILE)
    assert load_bundle(reg, "v1", expected_sha256=sha).metadata.model_sha256 == sha


def test_model_file_link_is_refused(
    reg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "elsewhere.joblib"
    shutil.move(reg / "v1" / MODEL_FILE, outside)
    (reg / "v1" / MODEL_FILE).symlink_to(outside)
    refuses_before_unpickling(monkeypatch, reg, "v1", r"must not be a link")


def test_missing_model_file_is_refused(reg: Path) -> None:
    (reg / "v1" / MODEL_FILE).unlink()
    with pytest.raises(BundleError, match=r"model\.joblib: cannot read it"):
        load_bundle(reg, "v1")


def test_non_pipeline_pickle_is_refused(reg: Path) -> None:
    import joblib

    model = reg / "v1" / MODEL_FILE
    joblib.dump({"not": "a pipeline"}, model)
    edit_metadata(reg / "v1", lambda doc: doc.update(model_sha256=file_sha256(model)))
    with pytest.raises(BundleError, match=r"holds a dict, not a pipeline"):
        load_bundle(reg, "v1")


def test_metadata_naming_another_version_is_refused(reg: Path) -> None:
    shutil.copytree(reg / "v1", reg / "v9")
    with pytest.raises(BundleError, match=r"metadata names version 'v1', not 'v9'"):
        load_bundle(reg, "v9")


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": "v1"}'])
def test_unreadable_metadata_is_refused(reg: Path, text: str) -> None:
    (reg / "v1" / METADATA_FILE).write_text(text)
    with pytest.raises(BundleError, match=r"metadata\.json: invalid metadata"):
        load_bundle(reg, "v1")


# -------------------------------------------------------------- version names


@pytest.mark.parametrize(
    "version",
    [
        "..",
        ".",
        "../v1",
        "v1/../v1",
        "v1/",
        "/etc",
        "/tmp",
        "",
        "-v1",
        ".v1",
        "v 1",
        "v1\x00",
        "a" * 129,
    ],
)
def test_version_that_is_not_a_plain_name_is_refused(reg: Path, version: str) -> None:
    with pytest.raises(BundleError, match=r"is not a plain name"):
        load_bundle(reg, version)


def test_absolute_path_to_a_real_bundle_is_refused(reg: Path) -> None:
    absolute = str((reg / "v1").resolve())
    assert Path(absolute, METADATA_FILE).is_file()
    with pytest.raises(BundleError, match=r"is not a plain name"):
        load_bundle(reg, absolute)


def test_symlinked_version_pointing_outside_is_refused(
    reg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A complete, valid bundle outside the registry, linked in under its name.
    outside = tmp_path / "outside" / "evil"
    shutil.copytree(reg / "v1", outside)
    edit_metadata(outside, lambda doc: doc.update(version="evil"))
    (reg / "evil").symlink_to(outside, target_is_directory=True)
    refuses_before_unpickling(monkeypatch, reg, "evil", r"points outside the registry")


def test_missing_version_is_refused(reg: Path) -> None:
    with pytest.raises(BundleError, match=r"version 'v2' is not in the registry"):
        load_bundle(reg, "v2")
    (reg / "v3").write_text("a file, not a bundle folder")
    with pytest.raises(BundleError, match=r"version 'v3' is not in the registry"):
        load_bundle(reg, "v3")


def test_bundle_errors_are_user_errors() -> None:
    # The command lines turn UserError into one line and exit 2.
    assert issubclass(BundleError, UserError)


# --------------------------------------------------------- library versions


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["libraries"].update({"scikit-learn": "0.0.1"}),
        lambda doc: doc["libraries"].pop("scikit-learn"),
    ],
    ids=["other-version", "not-recorded"],
)
def test_scikit_learn_mismatch_is_refused_unless_allowed(
    reg: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[Metadata], None],
) -> None:
    edit_metadata(reg / "v1", change)
    with monkeypatch.context() as patched:
        message = refuses_before_unpickling(
            patched, reg, "v1", r"was trained with scikit-learn"
        )
    assert sklearn.__version__ in message
    assert "allow the mismatch" in message

    with caplog.at_level(logging.WARNING, logger="txrisk.bundle"):
        bundle = load_bundle(reg, "v1", allow_version_mismatch=True)
    assert bundle.version == "v1"
    assert "loading anyway" in caplog.text


# -------------------------------------------------------------------- canary


@pytest.mark.parametrize("delta", [1e-3, -1e-5, 2e-6])
def test_canary_drift_is_refused(reg: Path, delta: float) -> None:
    def drift(doc: Metadata) -> None:
        doc["canary"]["probabilities"][5] += delta

    edit_metadata(reg / "v1", drift)
    with pytest.raises(
        BundleError, match=r"canary probabilities differ by .* \(tolerance 1e-06\)"
    ):
        load_bundle(reg, "v1")


def test_canary_within_tolerance_loads(reg: Path) -> None:
    def nudge(doc: Metadata) -> None:
        doc["canary"]["probabilities"][5] += 1e-9

    edit_metadata(reg / "v1", nudge)
    assert load_bundle(reg, "v1").version == "v1"


def test_canary_that_cannot_be_scored_is_refused(reg: Path) -> None:
    def poison(doc: Metadata) -> None:
        doc["canary"]["events"][0]["amount_usd"] = "lots"

    edit_metadata(reg / "v1", poison)
    with pytest.raises(BundleError, match=r"canary batch fails"):
        load_bundle(reg, "v1")


# ------------------------------------------------------------- list_versions


def test_list_versions_orders_by_created_at(reg: Path) -> None:
    copy_bundle(reg, "a", created_at="2030-01-03T00:00:00Z")
    copy_bundle(reg, "b", created_at="2001-01-01T00:00:00Z")
    copy_bundle(reg, "c", created_at="2030-01-02T00:00:00+00:00")
    copy_bundle(reg, "d", created_at="2030-01-03T01:00:00+02:00")  # before a, by 1 h
    assert [m.version for m in list_versions(reg)] == ["b", "v1", "c", "d", "a"]


def test_list_versions_breaks_ties_by_version(reg: Path) -> None:
    for name in ["z", "m", "k"]:
        copy_bundle(reg, name, created_at="2001-01-01T00:00:00Z")
    assert [m.version for m in list_versions(reg)][:3] == ["k", "m", "z"]


def test_list_versions_skips_broken_folders(
    reg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_bundle(reg, "good", created_at="2030-01-01T00:00:00Z")
    (reg / "bad-json").mkdir()
    (reg / "bad-json" / METADATA_FILE).write_text("{")
    copy_bundle(reg, "bad-field")
    edit_metadata(reg / "bad-field", lambda doc: doc.pop("spec"))
    copy_bundle(reg, "bad-threshold", threshold=7)
    (reg / "no-metadata").mkdir()
    shutil.copy(reg / "v1" / MODEL_FILE, reg / "no-metadata" / MODEL_FILE)
    shutil.copytree(reg / "v1", reg / ".staging-v7-123")
    (reg / "notes.txt").write_text("not a bundle")

    with caplog.at_level(logging.WARNING, logger="txrisk.bundle"):
        found = list_versions(reg)

    assert [m.version for m in found] == ["v1", "good"]
    assert caplog.text.count("skipping unreadable bundle") == 3
    for name in ["bad-json", "bad-field", "bad-threshold"]:
        assert name in caplog.text


def test_list_versions_of_an_empty_or_missing_registry(tmp_path: Path) -> None:
    assert list_versions(tmp_path) == []
    with pytest.raises(BundleError, match=r"cannot list it .*TXRISK_MODEL_DIR"):
        list_versions(tmp_path / "nowhere")


def test_list_versions_survives_a_created_at_without_zone(reg: Path) -> None:
    copy_bundle(reg, "naive", created_at="2030-01-01T00:00:00")
    versions = [m.version for m in list_versions(reg)]
    assert "v1" in versions

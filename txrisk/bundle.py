"""Model bundles: a fitted pipeline and its metadata, in one registry folder.

A bundle is `<registry>/<version>/` holding `model.joblib`, `metadata.json` and
the trainer's report. A pickle is code, so `load_bundle` checks where the folder
is and the model file's sha256 against the metadata before `joblib.load` sees a
byte of it; only then does it unpickle and check the pipeline against its canary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import sklearn
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sklearn.pipeline import Pipeline

from txrisk.errors import BundleError
from txrisk.explain import Explainer
from txrisk.frame import to_frame
from txrisk.prepare import CompiledPrepare, compile_prepare
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNING_KEY_ENV = "TXRISK_MODEL_KEY"

# A reloaded pipeline must reproduce its training-time canary probabilities to
# this tolerance; anything looser would hide a changed library or a bad file.
CANARY_TOLERANCE = 1e-6


class DataFingerprint(BaseModel):
    """Which data a model was trained on."""

    model_config = ConfigDict(frozen=True)

    source: str
    rows: int
    fraud_rate: float
    sha256: str


class Canary(BaseModel):
    """A few held-out events and the probabilities the model gave them at training."""

    model_config = ConfigDict(frozen=True)

    events: list[dict[str, Any]]
    probabilities: list[float]


class BundleMetadata(BaseModel):
    """Everything known about a trained model, written beside it as metadata.json."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    version: str = Field(pattern=VERSION_PATTERN.pattern)
    # Aware: versions are ordered by it, and naive and aware times do not compare.
    created_at: AwareDatetime
    estimator: str
    params: dict[str, Any]
    spec: FeatureSpec
    threshold: float = Field(ge=0.0, le=1.0)
    target_recall: float = Field(gt=0.0, le=1.0)
    metrics: dict[str, float]
    data: DataFingerprint
    libraries: dict[str, str]
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    canary: Canary | None = None
    # What `python -m trainer study` found: model comparison, tuning, validation
    # (cross-validated and time-ordered), calibration; absent for `train`.
    study: dict[str, Any] | None = None
    # HMAC-SHA256 over every other field (model_sha256 included), hex; written
    # when the trainer has a signing key.
    signature: str | None = None


@dataclass(frozen=True)
class ModelBundle:
    """A verified, loaded model ready to score."""

    metadata: BundleMetadata
    pipeline: Pipeline
    explainer: Explainer
    path: Path
    # The prepare step as plain array operations, when it reproduced the
    # pipeline's own output exactly on the canary batch.
    compiled: CompiledPrepare | None = None

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def spec(self) -> FeatureSpec:
        return self.metadata.spec

    def prepare_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The classifier's input for validated events, by the fastest exact path."""
        if self.compiled is not None:
            return self.compiled.transform(rows)
        return np.asarray(self.pipeline[:-1].transform(to_frame(self.spec, rows)))

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Fraud probability per row (plain pipeline path, for checks and reports)."""
        return np.asarray(self.pipeline.predict_proba(to_frame(self.spec, rows))[:, 1])


def library_versions() -> dict[str, str]:
    """The versions that decide whether a pickle reloads to the same model."""
    import pandas

    return {
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "joblib": joblib.__version__,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signing_key() -> bytes | None:
    """The shared HMAC key from TXRISK_MODEL_KEY, if one is configured."""
    key = os.environ.get(SIGNING_KEY_ENV)
    return key.encode() if key else None


def signature(metadata: BundleMetadata, key: bytes) -> str:
    """HMAC-SHA256 of the metadata without its signature, in canonical JSON."""
    fields = metadata.model_dump(mode="json", exclude={"signature"})
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def new_version(registry: Path, now: datetime | None = None) -> str:
    """A sortable version name from the UTC time, unique within the registry."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    version, suffix = stamp, 1
    while (registry / version).exists():
        suffix += 1
        version = f"{stamp}-{suffix}"
    return version


def check_version_name(version: str) -> str:
    """`version` if it can name a registry folder, else a `BundleError`."""
    if not VERSION_PATTERN.match(version) or version in {".", ".."}:
        raise BundleError(
            f"version {version!r} is not a plain name: use letters, digits, '.', "
            "'_' and '-', starting with a letter or digit"
        )
    return version


def save_bundle(
    registry: Path,
    pipeline: Pipeline,
    metadata: dict[str, Any],
    key: bytes | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> BundleMetadata:
    """Write a bundle into the registry atomically and return its metadata.

    `metadata` holds every `BundleMetadata` field but `model_sha256` and
    `signature`, which are computed here (signed only when `key` is given). The
    folder is built under a temporary name and renamed into place, so a scorer
    scanning the registry never sees half a bundle. `extra_files` (the
    trainer's report and its plots) are written into the same folder first.
    """
    extra_files = extra_files or {}
    for name in extra_files:
        if not VERSION_PATTERN.match(name) or name in {MODEL_FILE, METADATA_FILE}:
            raise BundleError(f"bundle file name {name!r} is not a plain free name")
    version = check_version_name(metadata["version"])
    registry.mkdir(parents=True, exist_ok=True)
    final = registry / version
    if final.exists():
        raise BundleError(f"version {version!r} already exists in {registry}")

    staging = registry / f".staging-{version}-{os.getpid()}"
    staging.mkdir()
    try:
        joblib.dump(pipeline, staging / MODEL_FILE)
        meta = BundleMetadata.model_validate(
            {**metadata, "model_sha256": file_sha256(staging / MODEL_FILE)}
        )
        if key is not None:
            meta = meta.model_copy(update={"signature": signature(meta, key)})
        (staging / METADATA_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
        for name, content in extra_files.items():
            (staging / name).write_bytes(content)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    logger.info("bundle saved version=%s path=%s", version, final)
    return meta


def read_metadata(folder: Path) -> BundleMetadata:
    """Parse a bundle's metadata.json, with one clear error if it is unusable."""
    path = folder / METADATA_FILE
    try:
        return BundleMetadata.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"{path}: cannot read it ({exc.strerror})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(
            f"{path}: invalid metadata at {where}: {first['msg']}"
        ) from exc


def bundle_folder(registry: Path, version: str) -> Path:
    """The folder of `version`, refusing names and links that leave the registry."""
    check_version_name(version)
    root = registry.resolve()
    folder = registry / version
    resolved = folder.resolve()
    if folder.is_symlink() or not resolved.is_relative_to(root) or resolved == root:
        raise BundleError(f"version {version!r} points outside the registry {registry}")
    if not folder.is_dir():
        raise BundleError(f"version {version!r} is not in the registry {registry}")
    return folder


def list_versions(registry: Path) -> list[BundleMetadata]:
    """Readable bundles in the registry, oldest first; unreadable ones are logged."""
    try:
        entries = sorted(registry.iterdir())
    except OSError as exc:
        raise BundleError(
            f"model directory {registry}: cannot list it ({exc.strerror}); "
            "set TXRISK_MODEL_DIR or --model-dir to a trained registry"
        ) from exc

    found = []
    for entry in entries:
        if entry.name.startswith(".") or not (entry / METADATA_FILE).is_file():
            continue
        try:
            found.append(read_metadata(entry))
        except BundleError as exc:
            logger.warning("skipping unreadable bundle: %s", exc)
    return sorted(found, key=lambda meta: (meta.created_at, meta.version))


def load_bundle(
    registry: Path,
    version: str,
    *,
    expected_sha256: str | None = None,
    allow_version_mismatch: bool = False,
    key: bytes | None = None,
) -> ModelBundle:
    """Verify and load one version; any failed check raises `BundleError`.

    1. the folder is a plain name inside the registry, not a link out of it
    2. the metadata parses and names this version
    3. with a key: the metadata's signature verifies (unsigned is refused)
    4. the model file's sha256 matches the metadata (and the announcement)
    5. the scikit-learn version matches, unless a mismatch is allowed
    6. only now: unpickle, build the explainer, re-score the canary batch
    """
    folder = bundle_folder(registry, version)

    metadata = read_metadata(folder)
    if metadata.version != version:
        raise BundleError(
            f"{folder}: metadata names version {metadata.version!r}, not {version!r}"
        )

    if key is not None:
        if metadata.signature is None:
            raise BundleError(
                f"version {version} is unsigned and a signing key is configured"
            )
        if not hmac.compare_digest(metadata.signature, signature(metadata, key)):
            raise BundleError(
                f"version {version}: signature does not verify with the configured key"
            )

    model_path = folder / MODEL_FILE
    if model_path.is_symlink():
        raise BundleError(f"{model_path}: the model file must not be a link")
    try:
        actual = file_sha256(model_path)
    except OSError as exc:
        raise BundleError(f"{model_path}: cannot read it ({exc.strerror})") from exc
    if actual != metadata.model_sha256:
        raise BundleError(
            f"{model_path}: sha256 {actual[:12]}… does not match the metadata's "
            f"{metadata.model_sha256[:12]}…; the file was changed or corrupted"
        )
    if expected_sha256 is not None and actual != expected_sha256:
        raise BundleError(
            f"version {version}: sha256 {actual[:12]}… does not match the "
            f"announced {expected_sha256[:12]}…"
        )

    trained_with = metadata.libraries.get("scikit-learn")
    if trained_with != sklearn.__version__:
        message = (
            f"version {version} was trained with scikit-learn {trained_with}, "
            f"this process has {sklearn.__version__}"
        )
        if not allow_version_mismatch:
            raise BundleError(f"{message}; retrain it or allow the mismatch explicitly")
        logger.warning("%s; loading anyway as allowed", message)

    try:
        pipeline = joblib.load(model_path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure refuses the model
        raise BundleError(f"{model_path}: cannot unpickle it ({exc})") from exc
    if not isinstance(pipeline, Pipeline) or not hasattr(pipeline, "predict_proba"):
        raise BundleError(
            f"{model_path}: holds a {type(pipeline).__name__}, not a pipeline"
        )

    bundle = ModelBundle(
        metadata=metadata,
        pipeline=pipeline,
        explainer=Explainer(pipeline, metadata.spec),
        path=folder,
    )
    _check_canary(bundle)
    return dataclasses.replace(bundle, compiled=_compiled(bundle))


def _compiled(bundle: ModelBundle) -> CompiledPrepare | None:
    compiled = compile_prepare(bundle.pipeline[0])
    canary = bundle.metadata.canary
    if compiled is None or canary is None or not canary.events:
        return None

    rows = [dict(event) for event in canary.events]
    expected = bundle.pipeline[:-1].transform(to_frame(bundle.spec, rows))
    if not np.array_equal(compiled.transform(rows), expected):
        logger.warning(
            "version %s: compiled prepare differs from the pipeline; using the "
            "pipeline",
            bundle.version,
        )
        return None
    return compiled


def _check_canary(bundle: ModelBundle) -> None:
    canary = bundle.metadata.canary
    if canary is None or not canary.events:
        return

    try:
        scored = bundle.predict_proba(canary.events)
    except Exception as exc:  # noqa: BLE001 - a model that cannot score is refused
        raise BundleError(
            f"version {bundle.version}: canary batch fails ({exc})"
        ) from exc

    drift = float(np.max(np.abs(scored - np.asarray(canary.probabilities))))
    if drift > CANARY_TOLERANCE:
        raise BundleError(
            f"version {bundle.version}: canary probabilities differ by {drift:.2e} "
            f"from training (tolerance {CANARY_TOLERANCE:g})"
        )

"""The model manager: which bundle serves, and how a new one takes over.

The scoring loop reads `active` (and `shadow`) once per batch, so every event of
a batch is scored by the same version and a swap takes effect between batches.
A candidate is loaded and verified in its own thread while the old model keeps
scoring; only a bundle that passed every check is swapped in. A refused
candidate leaves the old model serving and is not retried until announced again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scorer import metrics
from txrisk.bundle import ModelBundle, list_versions, load_bundle
from txrisk.contracts import ControlMessage
from txrisk.errors import BundleError
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """The last candidate that failed its checks, for readiness and alerts."""

    version: str
    reason: str
    at: datetime


class ModelManager:
    """Holds the serving bundle (and an optional shadow) of one registry."""

    def __init__(
        self,
        registry: Path,
        *,
        allow_sklearn_mismatch: bool = False,
        key: bytes | None = None,
    ) -> None:
        self.registry = registry
        self._allow_mismatch = allow_sklearn_mismatch
        self._key = key
        self._active: ModelBundle | None = None
        self.shadow: ModelBundle | None = None
        self.last_refusal: Refusal | None = None
        self.swaps: Counter[str] = Counter()
        # Loading unpickles and re-scores the canary: real CPU work, kept off
        # the event loop and out of the scoring thread.
        self._loader = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="model-load"
        )

    @property
    def active(self) -> ModelBundle:
        if self._active is None:
            raise BundleError("no model is loaded")
        return self._active

    @property
    def loaded(self) -> bool:
        return self._active is not None

    def load_initial(
        self, pinned: str | None = None, history: list[ControlMessage] | None = None
    ) -> ModelBundle:
        """Serve the pinned version, else the last activated one that verifies,
        else the newest bundle in the registry that verifies."""
        candidates: list[tuple[str, str | None]]
        if pinned is not None:
            candidates = [(pinned, None)]
        else:
            activations = [m for m in history or [] if m.action == "activate"]
            candidates = [(m.version, m.sha256) for m in reversed(activations)]  # type: ignore[misc]
            candidates += [(meta.version, None) for meta in reversed(self._registry())]

        reasons: dict[str, str] = {}
        for version, sha256 in candidates:
            # A version refused once (say, for a wrong announced sha256) is not
            # given a second chance through the registry listing.
            if version in reasons:
                continue
            try:
                bundle = self.load(version, sha256)
            except BundleError as exc:
                self._refuse(version, str(exc))
                reasons[version] = str(exc)
                continue
            self._active = bundle
            self._log_loaded("model loaded", bundle)
            self._apply_shadow_history(history or [])
            return bundle

        if not candidates:
            raise BundleError(
                f"model directory {self.registry} holds no model bundle; train one "
                "with `python -m trainer train --model-dir ...`"
            )
        raise BundleError(f"no model could be loaded: {next(iter(reasons.values()))}")

    def load(self, version: str, expected_sha256: str | None = None) -> ModelBundle:
        """Verify and load a version without serving it."""
        return load_bundle(
            self.registry,
            version,
            expected_sha256=expected_sha256,
            allow_version_mismatch=self._allow_mismatch,
            key=self._key,
        )

    async def apply(self, message: ControlMessage) -> None:
        """Act on one announcement; never raises for a bad candidate."""
        if message.action == "unshadow":
            if self.shadow is not None:
                logger.info("shadow stopped version=%s", self.shadow.version)
            self.shadow = None
            return

        version, sha256 = message.version, message.sha256
        assert version is not None and sha256 is not None
        if message.action == "activate" and self._serving(version, sha256):
            logger.info("model already serving version=%s", version)
            return

        loop = asyncio.get_running_loop()
        try:
            bundle = await loop.run_in_executor(
                self._loader, self._candidate, version, sha256
            )
        except Exception as exc:  # noqa: BLE001 - any failure refuses the candidate
            self._refuse(
                version, str(exc) if isinstance(exc, BundleError) else repr(exc)
            )
            return

        if message.action == "shadow":
            self.shadow = bundle
            self.swaps["shadowed"] += 1
            metrics.record_swap("shadowed", version)
            self._log_loaded("shadow loaded", bundle)
            return

        previous = self.active.version
        self._active = bundle
        if self.shadow is not None and self.shadow.version == version:
            self.shadow = None
        self.swaps["swapped"] += 1
        metrics.record_swap("swapped", version)
        metrics.set_active_model(version, bundle.metadata)
        logger.info("model swapped from=%s to=%s", previous, version)

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _candidate(self, version: str, sha256: str) -> ModelBundle:
        bundle = self.load(version, sha256)
        if self._active is not None:
            _check_feedable(self._active.spec, bundle.spec, version)
        return bundle

    def _serving(self, version: str, sha256: str) -> bool:
        active = self._active
        return active is not None and (
            active.version,
            active.metadata.model_sha256,
        ) == (
            version,
            sha256,
        )

    def _refuse(self, version: str, reason: str) -> None:
        self.last_refusal = Refusal(
            version=version, reason=reason, at=datetime.now(UTC)
        )
        self.swaps["refused"] += 1
        metrics.record_swap("refused", version)
        serving = self._active.version if self._active else "none"
        logger.warning(
            "model refused version=%s serving=%s reason=%s", version, serving, reason
        )

    def _registry(self) -> list:
        return list_versions(self.registry)

    def _apply_shadow_history(self, history: list[ControlMessage]) -> None:
        shadows = [m for m in history if m.action in {"shadow", "unshadow"}]
        if not shadows or shadows[-1].action == "unshadow":
            return
        last = shadows[-1]
        assert last.version is not None and last.sha256 is not None
        try:
            self.shadow = self._candidate(last.version, last.sha256)
            self._log_loaded("shadow loaded", self.shadow)
        except BundleError as exc:
            self._refuse(last.version, str(exc))

    def _log_loaded(self, what: str, bundle: ModelBundle) -> None:
        logger.info(
            "%s version=%s estimator=%s threshold=%.4f spec=%s",
            what,
            bundle.version,
            bundle.metadata.estimator,
            bundle.metadata.threshold,
            bundle.spec.name,
        )


def _check_feedable(current: FeatureSpec, candidate: FeatureSpec, version: str) -> None:
    """Refuse a model that needs fields the stream's events do not carry."""
    for name in candidate.numeric:
        if name not in current.numeric:
            raise BundleError(
                f"version {version} needs numeric field {name!r}, which the stream "
                f"(spec {current.name!r}) does not carry"
            )
    for name in candidate.categorical:
        if name not in current.categorical:
            raise BundleError(
                f"version {version} needs categorical field {name!r}, which the "
                f"stream (spec {current.name!r}) does not carry"
            )

"""The model manager: which bundle serves, and how it gets there.

The scoring loop reads `active` once per batch, so every event of a batch is
scored by the same version and a swap takes effect between batches.
"""

from __future__ import annotations

import logging
from pathlib import Path

from txrisk.bundle import ModelBundle, list_versions, load_bundle
from txrisk.errors import BundleError

logger = logging.getLogger(__name__)


class ModelManager:
    """Holds the serving bundle of one registry."""

    def __init__(self, registry: Path, *, allow_sklearn_mismatch: bool = False) -> None:
        self.registry = registry
        self._allow_mismatch = allow_sklearn_mismatch
        self._active: ModelBundle | None = None

    @property
    def active(self) -> ModelBundle:
        if self._active is None:
            raise BundleError("no model is loaded")
        return self._active

    @property
    def loaded(self) -> bool:
        return self._active is not None

    def load_initial(self, version: str | None = None) -> ModelBundle:
        """Load `version`, or the newest bundle in the registry when none is named."""
        if version is None:
            available = list_versions(self.registry)
            if not available:
                raise BundleError(
                    f"model directory {self.registry} holds no model bundle; train one "
                    "with `python -m trainer train --model-dir ...`"
                )
            version = available[-1].version

        bundle = self.load(version)
        self._active = bundle
        logger.info(
            "model loaded version=%s estimator=%s threshold=%.4f spec=%s",
            bundle.version,
            bundle.metadata.estimator,
            bundle.metadata.threshold,
            bundle.spec.name,
        )
        return bundle

    def load(self, version: str, expected_sha256: str | None = None) -> ModelBundle:
        """Verify and load a version without serving it."""
        return load_bundle(
            self.registry,
            version,
            expected_sha256=expected_sha256,
            allow_version_mismatch=self._allow_mismatch,
        )

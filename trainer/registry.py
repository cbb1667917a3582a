"""The model registry seen from the trainer: list versions, announce one.

The registry is a folder of bundles; which one serves is decided by the last
`activate` on the control topic, which every scorer replica follows.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from txrisk.bundle import (
    MODEL_FILE,
    BundleMetadata,
    bundle_folder,
    file_sha256,
    list_versions,
    read_metadata,
)
from txrisk.control import announce, announcement, last_activation, read_history
from txrisk.errors import BundleError, UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlTarget:
    """Where announcements go."""

    bootstrap_servers: str
    topic: str


def checked_metadata(registry: Path, version: str) -> BundleMetadata:
    """A version's metadata, after checking its model file matches it.

    The scorers verify everything again before serving; this only stops an
    announcement that every replica would refuse.
    """
    folder = bundle_folder(registry, version)
    metadata = read_metadata(folder)
    actual = file_sha256(folder / MODEL_FILE)
    if actual != metadata.model_sha256:
        raise BundleError(
            f"version {version}: model.joblib does not match its metadata's sha256; "
            "it would be refused by every scorer"
        )
    return metadata


def publish(
    registry: Path, version: str, target: ControlTarget, action: str
) -> BundleMetadata:
    """Announce `version` for `action` (activate or shadow) on the control topic."""
    metadata = checked_metadata(registry, version)
    message = announcement(action, metadata)
    asyncio.run(announce(target.bootstrap_servers, target.topic, message))
    return metadata


def stop_shadow(target: ControlTarget) -> None:
    asyncio.run(
        announce(target.bootstrap_servers, target.topic, announcement("unshadow", None))
    )


def active_version(target: ControlTarget) -> str | None:
    """The version last activated on the control topic, if any."""
    activation = last_activation(
        asyncio.run(read_history(target.bootstrap_servers, target.topic))
    )
    return activation.version if activation else None


def describe(registry: Path, target: ControlTarget | None) -> str:
    """A table of the registry's versions, the active one marked."""
    versions = list_versions(registry)
    if not versions:
        raise UserError(f"--model-dir {registry}: holds no model bundle")

    active: str | None = None
    note = ""
    if target is not None:
        try:
            active = active_version(target)
            note = "" if active else "(nothing activated on the control topic yet)"
        except UserError as exc:
            note = f"(active version unknown: {exc})"

    lines = [
        f"{'':2}{'version':<22}{'created (UTC)':<21}{'estimator':<32}"
        f"{'ROC AUC':>8}{'PR AUC':>8}{'thresh':>8}  signed"
    ]
    for meta in versions:
        mark = "* " if meta.version == active else "  "
        lines.append(
            f"{mark}{meta.version:<22}{meta.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{meta.estimator:<32}{meta.metrics.get('roc_auc', float('nan')):>8.4f}"
            f"{meta.metrics.get('pr_auc', float('nan')):>8.4f}{meta.threshold:>8.4f}  "
            f"{'yes' if meta.signature else 'no'}"
        )
    if note:
        lines.append(note)
    else:
        lines.append("* active on the control topic")
    return "\n".join(lines)

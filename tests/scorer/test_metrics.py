"""The scorer's metrics move with what the model manager does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scorer import metrics
from scorer.models import ModelManager
from txrisk.contracts import ControlMessage


def sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_refused_announcement_is_counted(registry: Path) -> None:
    manager = ModelManager(registry)
    manager.load_initial("v1")
    before = sample("txrisk_model_swaps_total", {"outcome": "refused"})
    wrong = ControlMessage(action="activate", version="v1", sha256="0" * 64)
    try:
        asyncio.run(manager.apply(wrong))
    finally:
        manager.close()
    assert manager.active.version == "v1"
    assert sample("txrisk_model_swaps_total", {"outcome": "refused"}) == before + 1


def test_active_model_info_is_replaced_not_added(registry: Path) -> None:
    manager = ModelManager(registry)
    meta = manager.load_initial("v1").metadata
    manager.close()
    metrics.set_active_model("old")
    metrics.set_active_model("v1", meta)
    text = metrics.render().decode()
    lines = [x for x in text.splitlines() if x.startswith("txrisk_model_info{")]
    assert len(lines) == 1
    assert 'version="v1"' in lines[0] and f'spec="{meta.spec.name}"' in lines[0]


def test_every_swap_outcome_and_dead_letter_reason_starts_at_zero() -> None:
    text = metrics.render().decode()
    for outcome in metrics.SWAP_OUTCOMES:
        assert f'txrisk_model_swaps_total{{outcome="{outcome}"}}' in text
    for reason in metrics.DEAD_LETTER_REASONS:
        assert f'txrisk_dead_letters_total{{reason="{reason}"}}' in text

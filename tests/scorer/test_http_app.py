"""The HTTP app without a broker: readiness, errors and limits, on a fake service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scorer.http import MAX_BODY_BYTES, create_app, readiness
from scorer.models import ModelManager
from scorer.settings import ScorerSettings
from scorer.summary import DeadLetterSummary
from txrisk.contracts import DeadLetter, SourceRef


class FakeService:
    """What the app needs of a ScorerService: settings, joined, a worker."""

    def __init__(self, batch_size: int = 500) -> None:
        self.settings = ScorerSettings(batch_size=batch_size)
        self.joined = False

    def run_in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.fixture(scope="module")
def models(registry: Path) -> Iterator[ModelManager]:
    manager = ModelManager(registry)
    manager.load_initial("v1")
    yield manager
    manager.close()


def client(models: ModelManager, service: FakeService, stop: Any = None) -> TestClient:
    return TestClient(create_app(models, service, stop))


def test_readiness_reasons() -> None:
    assert readiness(True, True, False) is None
    assert readiness(False, True, False) == "no model is loaded"
    assert "joined its group" in str(readiness(True, False, False))
    assert readiness(True, True, True) == "shutting down"
    assert "unreachable" in str(readiness(True, False, False, connected=False))


def test_readyz_follows_the_group_and_shutdown(models: ModelManager) -> None:
    service = FakeService()
    stop = asyncio.Event()
    with client(models, service, stop) as http:
        answer = http.get("/readyz")
        assert answer.status_code == 503
        assert "joined its group" in answer.json()["reason"]

        service.joined = True
        assert http.get("/readyz").json() == {"status": "ready", "model_version": "v1"}

        stop.set()
        assert http.get("/readyz").json()["reason"] == "shutting down"
        assert http.get("/healthz").status_code == 200


def test_no_model_means_not_ready_and_no_predictions(tmp_path: Path) -> None:
    empty = ModelManager(tmp_path)
    service = FakeService()
    service.joined = True
    with client(empty, service) as http:
        assert http.get("/readyz").json()["reason"] == "no model is loaded"
        assert http.get("/model").status_code == 503
        assert http.post("/predict", json={"tx_id": "a"}).status_code == 503
    empty.close()


def test_predict_limits_and_shapes(models: ModelManager) -> None:
    with client(models, FakeService(batch_size=2)) as http:
        assert http.post("/predict", json=[]).status_code == 422
        too_many = http.post("/predict", json=[{"tx_id": str(i)} for i in range(3)])
        assert too_many.status_code == 422
        assert "at most 2" in too_many.json()["detail"][0]["msg"]

        huge = b'{"tx_id": "' + b"x" * MAX_BODY_BYTES + b'"}'
        assert http.post("/predict", content=huge).status_code == 413

        not_object = http.post("/predict", json=[5])
        assert not_object.status_code == 422
        assert not_object.json()["detail"][0]["loc"] == ["body", 0]

        bad = http.post("/predict", json={"tx_id": "a", "amount_usd": -3})
        assert bad.json() == {
            "detail": [
                {
                    "loc": ["body", "amount_usd"],
                    "msg": "Input should be greater than or equal to 0",
                    "type": "greater_than_equal",
                    "input": -3,
                }
            ]
        }

        # Missing features are imputed, as on the stream.
        one = http.post("/predict", json={"tx_id": "only-an-id"})
        assert one.status_code == 200
        result = one.json()
        assert result["tx_id"] == "only-an-id" and result["model_version"] == "v1"
        assert len(result["imputed"]) == len(models.active.spec.columns)


def test_model_hides_the_canary_and_signature(models: ModelManager) -> None:
    with client(models, FakeService()) as http:
        model = http.get("/model").json()
    assert model["version"] == "v1" and model["shadow_version"] is None
    assert "canary" not in model["metadata"] and "signature" not in model["metadata"]
    assert model["metadata"]["threshold"] == models.active.metadata.threshold


def test_metrics_count_requests(models: ModelManager) -> None:
    with client(models, FakeService()) as http:
        http.get("/healthz")
        http.get("/no-such-page")
        text = http.get("/metrics").text
    assert 'txrisk_http_requests_total{handler="/healthz",status="200"}' in text
    assert 'txrisk_http_requests_total{handler="other",status="404"}' in text


def letter(kind: str, offset: int) -> DeadLetter:
    return DeadLetter(
        error=kind,  # type: ignore[arg-type]
        reason="why",
        source=SourceRef(topic="t", partition=0, offset=offset),
        payload="x",
        failed_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )


def test_dead_letter_summary_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    summary = DeadLetterSummary(interval_s=30, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="scorer.summary"):
        summary.add([letter("not_json", 1)])  # the first at once
        now[0] = 10
        summary.add([letter("empty", 2), letter("not_json", 3)])
        summary.flush()
        now[0] = 31
        summary.flush()  # the interval passed: one line for both
        summary.flush()  # nothing pending
        now[0] = 40
        summary.add([letter("empty", 4)])
        summary.flush(force=True)  # shutdown
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("dead letters count=1 since=start kinds={'not_json': 1}")
    assert lines[1].startswith(
        "dead letters count=2 since=31s kinds={'empty': 1, 'not_json': 1} latest=t/0@3"
    )
    assert lines[2].startswith("dead letters count=1 since=9s")

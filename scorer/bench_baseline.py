"""The reference design the benchmark compares against; not part of the service.

One event per HTTP request: a synchronous FastAPI endpoint validates the event,
builds a one-row DataFrame and calls `predict_proba`, served by uvicorn with one
worker. No explanation. It serves the same model bundle as the scorer under
test, read through the same verified loader and the same `to_frame`, so the
two differ only in design: request/response per event against batches through
Kafka.

Run by the benchmark as `uvicorn --factory scorer.bench_baseline:create_app`
with the registry and version in TXRISK_BASELINE_MODEL_DIR and
TXRISK_BASELINE_VERSION.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's body
# type from its annotation, which is a class built at run time for the spec.

import logging
import os
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI

from txrisk.bundle import load_bundle
from txrisk.contracts import TransactionEvent, event_model
from txrisk.frame import to_frame

logger = logging.getLogger(__name__)

MODEL_DIR_ENV = "TXRISK_BASELINE_MODEL_DIR"
VERSION_ENV = "TXRISK_BASELINE_VERSION"


def create_app() -> FastAPI:
    bundle = load_bundle(Path(os.environ[MODEL_DIR_ENV]), os.environ[VERSION_ENV])
    pipeline, spec, threshold = bundle.pipeline, bundle.spec, bundle.metadata.threshold
    Event: type[TransactionEvent] = event_model(spec)  # noqa: N806 - a class

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # A plain `def`: FastAPI runs it in its thread pool, as the reference did.
    @app.post("/predict")
    def predict(event: Event) -> dict[str, Any]:  # type: ignore[valid-type]
        checked = cast(TransactionEvent, event)
        frame = to_frame(spec, [checked.__dict__])
        probability = float(pipeline.predict_proba(frame)[0, 1])
        return {
            "tx_id": checked.tx_id,
            "fraud_probability": probability,
            "is_flagged": probability >= threshold,
        }

    logger.info("baseline serving version=%s", bundle.version)
    return app

"""HTTP beside the stream: metrics, health, readiness, the model, and /predict.

The app is served by uvicorn as a task in the scorer's own event loop. Scoring
for `/predict` runs on the stream's scoring thread, so the loop (and with it
every endpoint and the consumer's heartbeats) stays responsive while a batch
is scored, and an event gets the same result from either path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from scorer import metrics
from scorer.decode import Invalid, check_document
from scorer.models import ModelManager
from scorer.score import ScoredBatch, score_events
from scorer.settings import ScorerSettings
from txrisk.bundle import ModelBundle
from txrisk.contracts import TransactionEvent, event_model
from txrisk.errors import UserError

logger = logging.getLogger(__name__)

# A /predict body larger than this is refused before it is read: 4 MiB holds
# thousands of events, far more than `max_events` lets through anyway.
MAX_BODY_BYTES = 4 * 1024 * 1024
# How long shutdown waits for open requests before closing their connections;
# a /predict waits at most for the batch in hand plus its own scoring.
CLOSE_TIMEOUT_S = 5.0
# How often `start` checks that uvicorn accepts connections (within a few ms).
STARTUP_POLL_S = 0.01
# Idle keep-alive connections (Prometheus keeps one open) are closed after this.
KEEP_ALIVE_S = 30

T = TypeVar("T")

HANDLERS = ("/healthz", "/readyz", "/metrics", "/model", "/predict")


class ScoringService(Protocol):
    """What the app needs of `scorer.service.ScorerService`."""

    settings: ScorerSettings
    joined: bool

    def run_in_worker(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True)
class HttpContext:
    """What the app reads from the running scorer."""

    models: ModelManager
    service: ScoringService
    stop: asyncio.Event

    @property
    def max_events(self) -> int:
        # The stream's batch size: a request never holds the scoring thread
        # longer than a full stream batch does.
        return self.service.settings.batch_size


def readiness(
    model_loaded: bool, joined: bool, stopping: bool, connected: bool = True
) -> str | None:
    """None when ready to serve, else the reason why not."""
    if stopping:
        return "shutting down"
    if not model_loaded:
        return "no model is loaded"
    if not connected:
        return "the Kafka broker is unreachable"
    if not joined:
        return "the consumer has not joined its group (or is rebalancing)"
    return None


def create_app(
    models: ModelManager, service: ScoringService, stop: asyncio.Event | None = None
) -> FastAPI:
    """The scorer's HTTP API over a running scorer; `stop` set means stopping."""
    context = HttpContext(models, service, stop or asyncio.Event())
    # No interactive docs: they load scripts from a CDN the scorer's network
    # need not reach; the contracts' JSON Schemas come from `scorer schema`.
    app = FastAPI(title="txrisk scorer", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[..., Any]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        # Unknown paths share one label so a scanner cannot grow the series.
        handler = request.url.path if request.url.path in HANDLERS else "other"
        metrics.HTTP_REQUESTS.labels(handler, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(handler).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        reason = readiness(
            context.models.loaded,
            context.service.joined,
            context.stop.is_set(),
            # Services that watch the broker say so; others count as connected.
            bool(getattr(context.service, "connected", True)),
        )
        if reason is not None:
            return JSONResponse({"status": "not ready", "reason": reason}, 503)
        version = context.models.active.version
        return JSONResponse({"status": "ready", "model_version": version})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    @app.get("/model")
    async def model() -> JSONResponse:
        if not context.models.loaded:
            return JSONResponse({"detail": "no model is loaded"}, 503)
        return JSONResponse(describe_model(context.models))

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        return await _predict(context, request)

    return app


def describe_model(models: ModelManager) -> dict[str, Any]:
    """The serving version and its metadata, without the signature or canary.

    The canary holds held-out training rows; the signature is of no use to a
    reader and is reported as `signed` instead.
    """
    bundle = models.active
    meta = bundle.metadata
    shadow = getattr(models, "shadow", None)
    return {
        "version": bundle.version,
        "signed": getattr(meta, "signature", None) is not None,
        "shadow_version": shadow.version if shadow is not None else None,
        "metadata": meta.model_dump(mode="json", exclude={"canary", "signature"}),
    }


async def _predict(context: HttpContext, request: Request) -> Response:
    """Validate like the stream, score on the scoring thread, answer like the stream."""
    body = await _read_body(request)
    if body is None:
        return _problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _invalid([_body_error(f"the body is not JSON ({exc})", "json_invalid")])

    single = not isinstance(document, list)
    documents = [document] if single else document
    if not documents:
        return _invalid([_body_error("send an event or a non-empty list", "too_short")])
    if len(documents) > context.max_events:
        message = f"at most {context.max_events} events per request"
        return _invalid([_body_error(message, "too_long")])
    if not context.models.loaded:
        return _problem(503, "no model is loaded")

    # Read once, as the stream does per batch: one version answers the request.
    bundle = context.models.active
    settings = context.service.settings
    try:
        # Validation and scoring are CPU work: on the scoring thread, like a batch.
        outcome = await context.service.run_in_worker(
            _validate_and_score,
            bundle,
            documents,
            single,
            settings.top_features,
            settings.explain == "flagged",
        )
    except RuntimeError:
        # The scoring thread is gone: the scorer is shutting down.
        return _problem(503, "shutting down")
    if not isinstance(outcome, ScoredBatch):
        return _invalid(outcome)

    # The stream's own encoding, so the bytes match a published result.
    encoded = [value for _, value, _ in outcome.encoded([None] * len(outcome))]
    content = encoded[0] if single else b"[" + b",".join(encoded) + b"]"
    return Response(content, media_type="application/json")


def _validate_and_score(
    bundle: ModelBundle,
    documents: list[Any],
    single: bool,
    top_k: int,
    flagged_only: bool,
) -> ScoredBatch | list[dict[str, Any]]:
    """The stream's validation and scoring call; the field errors if any event
    is invalid, and then nothing is scored."""
    event_type = event_model(bundle.spec)
    events: list[TransactionEvent] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(documents):
        checked = check_document(item, event_type)
        if isinstance(checked, Invalid):
            prefix: list[str | int] = ["body"] if single else ["body", index]
            errors += [{**e, "loc": prefix + e["loc"]} for e in checked.errors]
        else:
            events.append(checked)
    if errors:
        return errors
    return score_events(bundle, events, top_k, datetime.now(UTC), flagged_only)


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _body_error(msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body"], "msg": msg, "type": kind}


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    """FastAPI's own shape for request validation errors."""
    return JSONResponse({"detail": errors}, 422)


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the scorer's loop owns SIGTERM
    and shuts the server down after the stream has committed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """The HTTP endpoint of one scorer process.

    `bind` claims the port first, before any Kafka connection, so a taken port
    ends startup with one clear error; `start` serves once the scorer runs.
    """

    def __init__(self, sock: socket.socket, host: str) -> None:
        self._socket = sock
        self._host = host
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port: the chosen one, or the free one picked for port 0."""
        return int(self._socket.getsockname()[1])

    @classmethod
    def bind(cls, host: str, port: int) -> HttpServer:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            raise UserError(
                f"cannot listen for HTTP on {host}:{port} ({exc}); set "
                "TXRISK_HTTP_PORT or --http-port (0 picks a free port)"
            ) from exc
        return cls(sock, host)

    async def start(
        self, models: ModelManager, service: ScoringService, stop: asyncio.Event
    ) -> None:
        """Serve the app in the running loop until `close`."""
        config = uvicorn.Config(
            create_app(models, service, stop),
            # Our logging set-up (text or JSON) handles uvicorn's records too.
            log_config=None,
            # One line per request is noise beside Prometheus' scrapes; the
            # request counters have the traffic.
            access_log=False,
            lifespan="off",
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=int(CLOSE_TIMEOUT_S),
        )
        # uvicorn's start and stop lines repeat ours.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._server = _Server(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="http"
        )
        # Logged once connections are accepted, so a client that read the
        # port from the log is not refused.
        while not self._server.started and not self._task.done():
            await asyncio.sleep(STARTUP_POLL_S)
        if self._task.done():
            self._task.result()  # raises what stopped it
        logger.info("http listening host=%s port=%d", self._host, self.port)

    async def close(self) -> None:
        """Stop serving; open requests get CLOSE_TIMEOUT_S to finish."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(self._task, CLOSE_TIMEOUT_S + 1)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("http server did not stop in time")
            except Exception:  # noqa: BLE001 - shutdown goes on regardless
                logger.exception("http server failed")
        self._socket.close()

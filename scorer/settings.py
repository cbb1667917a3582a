"""Scorer settings: environment variables, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from txrisk.errors import UserError

# Settings that `python -m scorer run` also takes as flags (--batch-size ...);
# the rest are set through the environment only.
SETTING_FLAGS = (
    "bootstrap_servers",
    "model_dir",
    "model_version",
    "input_topic",
    "output_topic",
    "dead_letter_topic",
    "control_topic",
    "shadow_topic",
    "group_id",
    "batch_size",
    "batch_wait_ms",
    "top_features",
    "explain",
    "scoring_threads",
    "http_port",
    "http_host",
)


class ScorerSettings(BaseSettings):
    """Every knob of the scorer; the environment variable is in each description."""

    model_config = SettingsConfigDict(
        env_prefix="TXRISK_", extra="ignore", populate_by_name=True, frozen=True
    )

    bootstrap_servers: str = Field(
        default="localhost:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
        description="KAFKA_BOOTSTRAP_SERVERS: host:port[,host:port]",
    )
    model_dir: Path = Field(
        default=Path("models"), description="TXRISK_MODEL_DIR: the model registry"
    )
    model_version: str | None = Field(
        default=None,
        description="TXRISK_MODEL_VERSION: serve this version instead of the newest",
    )
    input_topic: str = Field(default="transactions", min_length=1)
    output_topic: str = Field(default="risk-scores", min_length=1)
    dead_letter_topic: str = Field(default="transactions-dlq", min_length=1)
    control_topic: str = Field(default="model-control", min_length=1)
    # Where a shadow candidate's scores go; empty: nowhere but the metrics.
    shadow_topic: str = ""
    group_id: str = Field(default="txrisk-scorer", min_length=1)
    # 500 events amortise the per-batch cost of the pipeline and the producer
    # round trip while one batch still scores in a few tens of milliseconds.
    batch_size: int = Field(default=500, ge=1, le=100_000)
    # How long a poll waits for a batch to fill: the latency added when traffic
    # is light.
    batch_wait_ms: int = Field(default=20, ge=0, le=60_000)
    top_features: int = Field(default=3, ge=0, le=50)
    # Which events get top features: all of them, or only flagged ones (the
    # cheaper choice when explanations are needed for review, not for every
    # payment).
    explain: Literal["all", "flagged"] = "all"
    # Threads for the model's native code (OpenMP, BLAS). One by default: a
    # batch is too small to gain from more, and a second OpenMP thread spinning
    # beside another scorer process on the same cores slows both several-fold.
    # Scale out with processes in the consumer group instead.
    scoring_threads: int = Field(default=1, ge=1, le=256)
    # A batch that scores longer than this makes the broker think the member
    # died; five minutes is far above any batch we size. A batch that takes
    # more than half of it halves the batch size, so a slow model cannot make
    # the scorer rescore the same batch forever.
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    # Idempotent producers need InitProducerId, which the embedded broker lacks;
    # turn on for Apache Kafka.
    kafka_idempotence: bool = False
    # Exactly-once: results, dead letters and the input offsets in one Kafka
    # transaction per batch (Apache Kafka only; the embedded broker lacks
    # InitProducerId). Off by default: at-least-once with identical duplicates
    # is what most consumers want, and transactions cost a round trip a batch.
    kafka_transactional: bool = False
    # The producer's transactional.id; a restarted replica must reuse its id
    # so the broker fences the old one. Empty: "<group_id>-<hostname>", stable
    # for a StatefulSet pod or a fixed host.
    transactional_id: str = ""
    # How long one publish attempt waits for the broker (the producer's request
    # timeout): 30 s rides out a partition leader election on Apache Kafka.
    publish_timeout_ms: int = Field(default=30_000, ge=1_000, le=600_000)
    # Publish attempts per batch before the scorer exits non-zero without
    # committing. With the backoff below, 6 attempts span the first ~30 s of
    # broker trouble (plus up to one timeout each): long enough for a broker
    # restart, short enough that a dead output topic pages someone quickly.
    publish_attempts: int = Field(default=6, ge=1, le=100)
    # First wait between publish attempts; it doubles each time, up to 10 s.
    publish_backoff_ms: int = Field(default=1_000, ge=0, le=60_000)
    allow_sklearn_mismatch: bool = False
    client_id: str = "txrisk-scorer"
    # HTTP beside the stream (/metrics, /healthz, /readyz, /model, /predict).
    # 0 picks a free port and logs it; all interfaces by default so Prometheus
    # and the gateway can reach it: keep the port on the internal network.
    http_port: int = Field(default=8000, ge=0, le=65_535)
    http_host: str = Field(default="0.0.0.0", min_length=1)
    # Read by the logging set-up before settings load; declared here so a bad
    # value is refused like any other setting.
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def load(cls, **overrides: Any) -> ScorerSettings:
        """Settings from the environment, with non-None `overrides` from flags."""
        given = {key: value for key, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"])
            where = _env_name(name)
            if name in SETTING_FLAGS:
                where = f"flag --{name.replace('_', '-')} or {where}"
            raise UserError(
                f"setting {name} ({where}): {first['msg']}, got {first.get('input')!r}"
            ) from exc

    def public(self) -> dict[str, Any]:
        """The settings as logged at startup (nothing secret is held here)."""
        return {key: str(value) for key, value in self.model_dump().items()}


def _env_name(field: str) -> str:
    if field == "bootstrap_servers":
        return "KAFKA_BOOTSTRAP_SERVERS"
    return f"TXRISK_{field.upper()}"

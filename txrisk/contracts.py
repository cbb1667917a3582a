"""The wire contracts: transaction event, risk result, dead letter, control message.

This module is the one place that defines them. The event's features come from
the feature spec of the model being served, so `event_model` builds the event
class from a spec; the other contracts are fixed. `python -m scorer schema`
writes all of them as JSON Schema for the gateway and downstream teams.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    model_validator,
)

from txrisk.spec import FeatureSpec

TX_ID_MAX_LENGTH = 128

TxId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=TX_ID_MAX_LENGTH, pattern=r"\S"
    ),
]


def _number_input(value: Any) -> Any:
    """Refuse what lax number parsing would let through: booleans, NaN, Infinity."""
    # JSON true/false would otherwise pass as 1/0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")

    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            raise ValueError("must be a number or a decimal string") from None
        if not math.isfinite(parsed):
            raise ValueError("must be a finite number")

    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _epoch_ms_or_iso(value: Any) -> Any:
    """Accept epoch milliseconds as a number; leave strings to ISO-8601 parsing."""
    if isinstance(value, bool):
        raise ValueError("must be ISO-8601 text or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 253_402_300_800_000:
            raise ValueError("epoch milliseconds out of range (year 1970 to 9999)")
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return value


Timestamp = Annotated[datetime | None, BeforeValidator(_epoch_ms_or_iso)]


class TransactionEvent(BaseModel):
    """Fields every event has; `event_model` adds the spec's features."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tx_id: TxId
    timestamp: Timestamp = Field(
        default=None, description="ISO-8601 text or epoch milliseconds"
    )


_EVENT_MODELS: dict[str, type[TransactionEvent]] = {}


def event_model(spec: FeatureSpec) -> type[TransactionEvent]:
    """The event class for a spec: its features are optional, missing is imputed."""
    key = spec.model_dump_json()
    if key not in _EVENT_MODELS:
        _EVENT_MODELS[key] = _build_event_model(spec)
    return _EVENT_MODELS[key]


def _build_event_model(spec: FeatureSpec) -> type[TransactionEvent]:
    fields: dict[str, Any] = {}

    for name, num in spec.numeric.items():
        kind = int if num.integer else float
        bounded = Annotated[kind, Field(ge=num.min, le=num.max, allow_inf_nan=False)]
        fields[name] = (Annotated[bounded | None, BeforeValidator(_number_input)], None)

    for name, cat in spec.categorical.items():
        fields[name] = (
            Annotated[
                str | None, StringConstraints(strict=True, max_length=cat.max_length)
            ],
            None,
        )

    return create_model(  # type: ignore[call-overload, no-any-return]
        "TransactionEvent",
        __base__=TransactionEvent,
        __doc__=f"A payment event for models of spec {spec.name!r}.",
        **fields,
    )


class TopFeature(BaseModel):
    """One input field's signed contribution to the score, in log-odds units."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float | int | str | None = Field(
        description="the event's value; null if imputed"
    )
    contribution: float


class RiskResult(BaseModel):
    """What the scorer publishes for every event it scored."""

    model_config = ConfigDict(frozen=True)

    tx_id: str
    fraud_probability: float = Field(ge=0.0, le=1.0)
    is_flagged: bool
    threshold: float = Field(ge=0.0, le=1.0)
    model_version: str
    top_features: list[TopFeature]
    imputed: list[str] = Field(description="features that were missing or null")
    scored_at: datetime


class ShadowScore(BaseModel):
    """A candidate model's score of an event next to the serving model's.

    Published only to the optional shadow topic; nothing downstream acts on it.
    """

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    tx_id: str
    model_version: str
    fraud_probability: float = Field(ge=0.0, le=1.0)
    is_flagged: bool
    active_version: str
    active_probability: float = Field(ge=0.0, le=1.0)
    scored_at: datetime


DeadLetterKind = Literal[
    "empty",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_tx_id",
    "invalid_field",
    # A key appears twice in one object: which value counts is ambiguous.
    "duplicate_key",
]


class SourceRef(BaseModel):
    """Where a message was read from."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """A message that could not be scored, with the reason and the original bytes."""

    model_config = ConfigDict(frozen=True)

    error: DeadLetterKind
    reason: str = Field(description="one line naming the offending field(s)")
    source: SourceRef
    payload: str | None = Field(description="the original value; base64 if not UTF-8")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    payload_truncated: bool = Field(
        default=False,
        description="payload or key cut to its first 64 KiB (key: 1 KiB); the "
        "whole message stays in the input topic at `source`",
    )
    key: str | None = Field(
        default=None, description="the original key; base64 if not UTF-8"
    )
    failed_at: datetime


class ControlMessage(BaseModel):
    """A model announcement on the control topic.

    `activate` serves a version; `shadow` scores every event with a candidate as
    well, without publishing its results downstream; `unshadow` stops that.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: Literal["activate", "shadow", "unshadow"]
    version: str | None = Field(default=None, min_length=1, max_length=128)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    created_at: datetime | None = None
    announced_at: datetime | None = None

    @model_validator(mode="after")
    def _names_a_model(self) -> ControlMessage:
        if self.action != "unshadow" and (self.version is None or self.sha256 is None):
            raise ValueError(f"{self.action} needs a version and its sha256")
        return self

"""Decode and validate one Kafka message into an event, or decide its dead letter.

Every way a message can be unusable ends here as a `DeadLetter` with a kind and
a one-line reason; nothing in this module raises for bad input.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from txrisk.contracts import DeadLetter, DeadLetterKind, SourceRef, TransactionEvent

logger = logging.getLogger(__name__)

# The part of an offending value quoted in a reason: enough to recognise it,
# short enough that a 10 MB string does not become a 10 MB dead letter reason.
QUOTE_CHARS = 40


def decode(
    value: bytes | None,
    key: bytes | None,
    source: SourceRef,
    event_type: type[TransactionEvent],
) -> TransactionEvent | DeadLetter:
    """The validated event in `value`, or the dead letter saying why there is none."""
    if not value:
        return dead_letter("empty", "the message has no value", value, key, source)

    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"the value is not UTF-8 (byte {exc.start})"
        return dead_letter("not_utf8", reason, value, key, source)

    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return dead_letter("not_json", f"the value is not JSON ({exc})", value, key, source)

    try:
        checked = check_document(document, event_type)
    except Exception as exc:  # noqa: BLE001 - a bad message must never stop scoring
        # Validation should only raise ValidationError; anything else is our
        # bug, but the message is still dead-lettered rather than lost.
        logger.exception(
            "validation raised unexpectedly topic=%s partition=%d offset=%d",
            source.topic,
            source.partition,
            source.offset,
        )
        reason = f"validation failed unexpectedly ({type(exc).__name__})"
        return dead_letter("invalid_field", reason, value, key, source)
    if isinstance(checked, Invalid):
        return dead_letter(checked.kind, checked.reason, value, key, source)
    return checked


@dataclass(frozen=True)
class Invalid:
    """Why a parsed document is no event: the dead-letter kind and reason, and
    the field errors in FastAPI's shape (loc, msg, type) for `/predict`."""

    kind: DeadLetterKind
    reason: str
    errors: list[dict[str, Any]]


def check_document(
    document: Any, event_type: type[TransactionEvent]
) -> TransactionEvent | Invalid:
    """The event in a parsed JSON document, or why there is none.

    The stream and `POST /predict` both validate through here, so an event is
    accepted or refused the same way on either path.
    """
    if not isinstance(document, dict):
        kind = type(document).__name__
        reason = f"the value is a JSON {kind}, not an object"
        return Invalid("not_object", reason, [_error([], reason, "not_object")])

    if document.get("tx_id") is None:
        reason = "tx_id is missing or null"
        return Invalid("missing_tx_id", reason, [_error(["tx_id"], reason, "missing")])

    try:
        return event_type.model_validate(document)
    except ValidationError as exc:
        return Invalid("invalid_field", _reason(exc), _field_errors(exc))


def dead_letter(
    kind: DeadLetterKind,
    reason: str,
    value: bytes | None,
    key: bytes | None,
    source: SourceRef,
) -> DeadLetter:
    """A dead letter that keeps the original bytes, as text when they are UTF-8."""
    payload, encoding = _as_text(value)
    key_text, _ = _as_text(key)
    return DeadLetter(
        error=kind,
        reason=reason,
        source=source,
        payload=payload,
        payload_encoding=encoding,
        key=key_text,
        failed_at=datetime.now(UTC),
    )


def _as_text(raw: bytes | None) -> tuple[str | None, Any]:
    if raw is None:
        return None, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _error(loc: list[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Each failing field with its message and the offending value, quoted short."""
    errors = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        entry = _error(list(error["loc"]), message, error["type"])
        value = error.get("input")
        if isinstance(value, str) and len(value) > QUOTE_CHARS:
            value = value[:QUOTE_CHARS] + "…"
        if value is None or isinstance(value, str | int | float | bool):
            entry["input"] = value
        errors.append(entry)
    return errors


def _reason(exc: ValidationError) -> str:
    """'field: problem (got value)' for each failing field, on one line."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "event"
        message = error["msg"].removeprefix("Value error, ")
        quoted = repr(error.get("input"))
        if len(quoted) > QUOTE_CHARS:
            quoted = quoted[:QUOTE_CHARS] + "…"
        parts.append(f"{field}: {message} (got {quoted})")
    return "; ".join(parts)

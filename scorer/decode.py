"""Decode and validate one Kafka message into an event, or decide its dead letter.

Every way a message can be unusable ends here as a `DeadLetter` with a kind and
a one-line reason; nothing in this module raises for bad input.
"""

from __future__ import annotations

import base64
import json
import logging
import reprlib
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
# A dead letter keeps at most this much of the message, so that it stays under
# the producer's and the broker's 1 MB message limit even if every character
# is escaped on the way out (6 bytes each); the whole message stays in the
# input topic at `source`. Events are a few hundred bytes, so only hostile or
# broken messages are cut.
PAYLOAD_MAX_CHARS = 64 * 1024
# Keys are ids; a longer one is cut the same way (and marked by the same flag).
KEY_MAX_CHARS = 1024


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
        document = _parse_overflowing(text)
        if document is None:
            reason = f"the value is not JSON ({exc})"
            return dead_letter("not_json", reason, value, key, source)

    if isinstance(document, dict) and _may_repeat_keys(text, document):
        repeated = _repeated_key(text)
        if repeated is not None:
            return dead_letter(*repeated, value, key, source)

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


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _parse_overflowing(text: str) -> Any | None:
    """Parse JSON that orjson refuses only for a number beyond a double (1e400).

    The standard parser reads such numbers as infinity, so validation can name
    the field; NaN and Infinity tokens stay refused. Only runs on the rare
    message orjson refused, so its slowness does not matter.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _may_repeat_keys(text: str, document: dict[str, Any]) -> bool:
    """False when a cheap count proves no key of `text` repeats.

    orjson silently keeps the last of repeated keys; a payment event that says
    two things is refused instead, but the exact check costs four times the
    parse, so it only runs when this one cannot rule repeats out. Without a
    backslash, a `"` followed by `:` or ` :` ends a key and nothing else; with
    no tab, newline, or quote followed by two spaces, every key is followed by
    one of those. The count is then the number of keys written at every depth,
    equal to the object's size only if no key repeats and nothing is nested.
    """
    if "\\" in text or "\n" in text or "\t" in text or "\r" in text or '"  ' in text:
        return True
    return text.count('":') + text.count('" :') != len(document)


def _no_value(token: str) -> None:
    return None


def _repeated_key(text: str) -> tuple[DeadLetterKind, str] | None:
    """The dead letter's kind and reason if a key repeats in any object."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        for name, _ in items:
            if name in seen:
                repeated.append(name)
            seen.add(name)

    try:
        # Numbers are not needed, and not converting them keeps 5,000-digit
        # integers (refused by int()) from failing the check.
        json.loads(
            text, object_pairs_hook=pairs, parse_int=_no_value, parse_float=_no_value
        )
    except RecursionError:
        return "not_json", "the value is nested too deeply to check its keys"
    except ValueError:
        return None  # orjson parsed it: only a constant or a float can get here
    if not repeated:
        return None
    name = repr(repeated[0])
    if len(name) > QUOTE_CHARS:
        name = name[:QUOTE_CHARS] + "…"
    return "duplicate_key", f"key {name} appears more than once in an object"


def dead_letter(
    kind: DeadLetterKind,
    reason: str,
    value: bytes | None,
    key: bytes | None,
    source: SourceRef,
) -> DeadLetter:
    """A dead letter that keeps the original bytes, as text when they are UTF-8."""
    payload, encoding, cut = _as_text(value, PAYLOAD_MAX_CHARS)
    key_text, _, key_cut = _as_text(key, KEY_MAX_CHARS)
    return DeadLetter(
        error=kind,
        reason=reason,
        source=source,
        payload=payload,
        payload_encoding=encoding,
        payload_truncated=cut or key_cut,
        key=key_text,
        failed_at=datetime.now(UTC),
    )


def _as_text(raw: bytes | None, limit: int) -> tuple[str | None, Any, bool]:
    """The bytes as text (base64 if not UTF-8), at most `limit` characters,
    and whether they were cut."""
    if raw is None:
        return None, "utf-8", False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # base64 writes 4 characters for 3 bytes.
        kept = raw[: limit // 4 * 3]
        return base64.b64encode(kept).decode("ascii"), "base64", len(kept) < len(raw)
    return text[:limit], "utf-8", len(text) > limit


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
        quoted = _quote(error.get("input"))
        if len(quoted) > QUOTE_CHARS:
            quoted = quoted[:QUOTE_CHARS] + "…"
        parts.append(f"{field}: {message} (got {quoted})")
    return "; ".join(parts)


# Lists and objects are quoted two levels deep: repr() of a 1,000-deep list
# would pass the recursion limit, and only the start is quoted anyway.
_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxstring = _SHORT.maxother = QUOTE_CHARS


def _quote(value: Any) -> str:
    if isinstance(value, str):
        # Cut first: repr() of a 10 MB string would copy all of it.
        return repr(value[: QUOTE_CHARS + 1])
    if isinstance(value, list | dict | tuple | set):
        return _SHORT.repr(value)
    return repr(value)

"""Hypothesis strategies for hostile Kafka messages, mixed with good events.

A message is (key, value). Events are written as JSON text by hand, so a field
can hold what no JSON library writes: NaN and Infinity tokens, numbers beyond
a double, 5,000-digit integers, lone surrogate escapes, repeated keys.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import orjson
import pandas as pd
from hypothesis import strategies as st

from trainer.generate import generate
from txrisk.spec import load_spec

SPEC = load_spec("gateway")
FIELDS = ["tx_id", "timestamp", *SPEC.numeric, *SPEC.categorical, "note"]
TEN_MB = 10 * 1024 * 1024

Message = tuple[bytes | None, bytes | None]


def json_token(value: Any) -> str:
    # The standard library writes integers of any size (orjson stops at 64 bits).
    return json.dumps(value, ensure_ascii=False)


def render(fields: list[tuple[str, str]]) -> bytes:
    """An object from (name, raw JSON token) pairs, repeats and all."""
    return ("{" + ", ".join(f"{json_token(k)}: {t}" for k, t in fields) + "}").encode()


@functools.cache
def good_pool() -> list[dict[str, str]]:
    """Realistic good events from the synthetic gateway generator, as raw
    tokens. Hypothesis picks among them and spoils them: drawing every value of
    every event would make generating 10,000 messages take minutes."""
    events = []
    for row in generate(POOL_SIZE, seed=81).to_dict("records"):
        fields = {"tx_id": '"@ID@"'}
        for name in [*SPEC.numeric, *SPEC.categorical]:
            value = row[name]
            if value is not None and value is not pd.NA and value == value:
                number = isinstance(value, float | int) and not isinstance(value, str)
                fields[name] = json_token(float(value) if number else value)
        # Half with ISO text, half with epoch milliseconds.
        stamp = row["timestamp"]
        fields["timestamp"] = json_token(
            stamp.isoformat() if len(events) % 2 else int(stamp.timestamp() * 1000)
        )
        events.append(fields)
    return events


POOL_SIZE = 500
good_fields = st.integers(0, POOL_SIZE - 1).map(lambda i: dict(good_pool()[i]))

deep_array = st.integers(1, 1_500).map(lambda d: "[" * d + "]" * d)
deep_object = st.integers(1, 1_200).map(lambda d: '{"a": ' * d + "1" + "}" * d)
nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner)
    ),
    max_leaves=8,
).map(json_token)

# Every kind of bad value a field can hold.
bad_token = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "-NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "1e-400",
            "1" * 5_000,
            "-1",
            "-0.5",
            "-0",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            '""',
            '" "',
            '"NaN"',
            '"Infinity"',
            '"-Infinity"',
            '"1e400"',
            '"1_000"',
            '"0x10"',
            '" 5 "',
            '"\\ud800"',
            '"\\udfff\\ud800"',
            '"\\u0000"',
            '"tx\\u0000id"',
            '"12.5"',
            '"-12.5"',
            '"١٢"',
        ]
    ),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=20).map(json_token),
    # Up to 70,000 characters: past the 64 KiB a dead letter keeps.
    st.integers(0, 70_000).map(lambda n: json_token("x" * n)),
    nested,
    deep_array,
    deep_object,
)


@st.composite
def event_fields(draw: st.DrawFn, hostile: bool) -> list[tuple[str, str]]:
    """A good event's fields; if `hostile`, one made bad and maybe one dropped.

    One field per message keeps the draws per message few, so 10,000 messages
    generate in seconds; across them every field meets every kind of value.
    """
    fields = draw(good_fields)
    if hostile:
        fields[draw(st.sampled_from(FIELDS))] = draw(bad_token)
        dropped = draw(st.sampled_from([None, None, *FIELDS]))
        fields.pop(dropped or "", None)
    return list(fields.items())


@st.composite
def repeated_key(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A good event that says one field twice."""
    pairs = draw(event_fields(hostile=False))
    name = draw(st.sampled_from([name for name, _ in pairs]))
    again = (name, draw(st.one_of(st.just("1"), st.just('"other"'), bad_token)))
    where = draw(st.integers(0, len(pairs)))
    return [*pairs[:where], again, *pairs[where:]]


def _spoil_utf8(value: bytes, at: int) -> bytes:
    at = at % max(1, len(value))
    return value[:at] + b"\xff\xfe" + value[at:]


@st.composite
def message_value(draw: st.DrawFn) -> tuple[str, bytes | None]:
    """(what it is, the value); '@ID@' in it becomes the message's id."""
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "good",
                "bad_field",
                "bad_field",
                "repeated_key",
                "not_utf8",
                "binary",
                "not_object",
                "truncated",
                "empty",
                "none",
            ]
        )
    )
    if kind == "good":
        return kind, render(draw(event_fields(hostile=False)))
    if kind == "bad_field":
        return kind, render(draw(event_fields(hostile=True)))
    if kind == "repeated_key":
        return kind, render(draw(repeated_key()))
    if kind == "not_utf8":
        value = render(draw(event_fields(hostile=False)))
        return kind, _spoil_utf8(value, draw(st.integers(0, 10_000)))
    if kind == "binary":
        return kind, draw(st.binary(min_size=1, max_size=300))
    if kind == "not_object":
        token = draw(
            st.one_of(nested, st.sampled_from(["[]", "42", '"tx"', "null", "1e3"]))
        )
        return kind, token.encode()
    if kind == "truncated":
        value = render(draw(event_fields(hostile=False)))
        return kind, value[: draw(st.integers(1, len(value) - 1))]
    if kind == "empty":
        return kind, b""
    return kind, None


messages = st.tuples(st.booleans(), message_value())


def number(index: int, null_key: bool, value: bytes | None, prefix: str) -> Message:
    """Give a generated message its unique id: the key (unless null) and the
    tx id of its event, if it has one."""
    ident = f"{prefix}-{index}"
    if value is None:
        # Kafka clients refuse a message with neither key nor value.
        return ident.encode(), None
    value = value.replace(b"@ID@", ident.encode())
    return (None if null_key else ident.encode()), value


def huge_messages(prefix: str) -> list[Message]:
    """10 MB strings where an event has strings: tx id, a category, a field the
    spec does not know, and a value that is not JSON at all."""
    big = json_token("x" * TEN_MB)
    good = orjson.loads(
        render(
            list({"amount_usd": "12.5", "chain": '"tron"', "tx_id": '"@ID@"'}.items())
        )
    )
    shapes = [
        [("tx_id", big), ("amount_usd", "1")],
        [("tx_id", '"@ID@"'), ("chain", big)],
        [
            ("tx_id", '"@ID@"'),
            ("note", big),
            ("amount_usd", json_token(good["amount_usd"])),
        ],
    ]
    values = [render(shape) for shape in shapes] + [b"\xff" * TEN_MB]
    return [number(i, False, v, prefix) for i, v in enumerate(values)]

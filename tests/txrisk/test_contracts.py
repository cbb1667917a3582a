"""Unit tests of the wire contracts: event validation, dead letters, JSON Schemas.

Events go through `scorer.decode.decode` with the event class of the built-in
gateway spec, exactly as the scorer validates a Kafka message; no broker.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from scorer.cli import main as scorer_main
from scorer.decode import QUOTE_CHARS, decode
from txrisk.contracts import (
    ControlMessage,
    DeadLetter,
    RiskResult,
    SourceRef,
    TransactionEvent,
    event_model,
)
from txrisk.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
SOURCE = SourceRef(topic="transactions", partition=3, offset=41)
GATEWAY = load_spec("gateway")
FEATURES = GATEWAY.columns
JAN_1_2026 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def event_type() -> type[TransactionEvent]:
    return event_model(load_spec())


def body(**fields: Any) -> bytes:
    """A JSON message value from keyword fields."""
    return orjson.dumps(fields)


def decoded_event(value: bytes, event_type: type[TransactionEvent]) -> TransactionEvent:
    result = decode(value, b"key", SOURCE, event_type)
    assert not isinstance(result, DeadLetter), result.reason
    return result


def dead(value: bytes | None, event_type: type[TransactionEvent]) -> DeadLetter:
    result = decode(value, b"key", SOURCE, event_type)
    assert isinstance(result, DeadLetter), f"accepted: {result!r}"
    return result


# ---------------------------------------------------------------- good inputs

GOOD: list[tuple[str, bytes, dict[str, Any]]] = [
    # (id, message value, the fields the event must hold)
    ("decimal-string", body(tx_id="a", amount_usd="12.5"), {"amount_usd": 12.5}),
    ("decimal-string-gas", body(tx_id="a", gas_price="0.001"), {"gas_price": 0.001}),
    ("integer-for-float", body(tx_id="a", avg_tx_value=5), {"avg_tx_value": 5.0}),
    ("integer-valued-float", body(tx_id="a", tx_count_24h=3.0), {"tx_count_24h": 3}),
    (
        "integer-string",
        body(tx_id="a", address_age_days="17"),
        {"address_age_days": 17},
    ),
    ("zero", body(tx_id="a", amount_usd=0, tx_count_24h=0), {"amount_usd": 0.0}),
    (
        "inclusive-upper-bounds",
        body(
            tx_id="a",
            amount_usd=1e9,
            gas_price=1e7,
            tx_count_24h=1_000_000,
            address_age_days=36_500,
            avg_tx_value=1e9,
        ),
        {
            "amount_usd": 1e9,
            "gas_price": 1e7,
            "tx_count_24h": 1_000_000,
            "address_age_days": 36_500,
            "avg_tx_value": 1e9,
        },
    ),
    (
        "iso-utc",
        body(tx_id="a", timestamp="2026-01-01T00:00:00Z"),
        {"timestamp": JAN_1_2026},
    ),
    (
        "iso-offset",
        body(tx_id="a", timestamp="2026-01-01T02:00:00+02:00"),
        {"timestamp": JAN_1_2026},
    ),
    (
        "iso-fraction",
        body(tx_id="a", timestamp="2026-01-01T00:00:00.250Z"),
        {"timestamp": JAN_1_2026 + timedelta(milliseconds=250)},
    ),
    (
        "epoch-ms",
        body(tx_id="a", timestamp=1_767_225_600_000),
        {"timestamp": JAN_1_2026},
    ),
    (
        "epoch-ms-float",
        body(tx_id="a", timestamp=1_767_225_600_500.0),
        {"timestamp": JAN_1_2026 + timedelta(milliseconds=500)},
    ),
    (
        "epoch-zero",
        body(tx_id="a", timestamp=0),
        {"timestamp": datetime(1970, 1, 1, tzinfo=UTC)},
    ),
    ("timestamp-null", body(tx_id="a", timestamp=None), {"timestamp": None}),
    ("only-tx-id", body(tx_id="a"), {name: None for name in [*FEATURES, "timestamp"]}),
    (
        "explicit-nulls",
        body(tx_id="a", amount_usd=None, tx_count_24h=None, chain=None),
        {"amount_usd": None, "tx_count_24h": None, "chain": None},
    ),
    (
        "unknown-fields-ignored",
        body(
            tx_id="a", chain="tron", colour="red", nested={"x": [1, None]}, is_fraud=1
        ),
        {"chain": "tron"},
    ),
    (
        "categoricals",
        body(tx_id="a", chain="ethereum", token_type="ERC20", sender_country="日本"),
        {"chain": "ethereum", "token_type": "ERC20", "sender_country": "日本"},
    ),
    ("categorical-64-chars", body(tx_id="a", chain="c" * 64), {"chain": "c" * 64}),
    ("tx-id-128-chars", body(tx_id="t" * 128), {"tx_id": "t" * 128}),
    ("tx-id-unicode", body(tx_id="tx-ü-1"), {"tx_id": "tx-ü-1"}),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(v, e) for _, v, e in GOOD], ids=[i for i, _, _ in GOOD]
)
def test_good_event_is_accepted(
    value: bytes, expected: dict[str, Any], event_type: type[TransactionEvent]
) -> None:
    event = decoded_event(value, event_type)
    for name, want in expected.items():
        got = getattr(event, name)
        assert got == want, name
        # 12.5 must stay a float and 3.0 become an int, not the other way round.
        assert type(got) is type(want), (name, type(got))
    assert event.tx_id == orjson.loads(value)["tx_id"]


def test_missing_and_null_features_are_none(event_type: type[TransactionEvent]) -> None:
    event = decoded_event(body(tx_id="a", amount_usd=None, chain="tron"), event_type)
    assert {name: getattr(event, name) for name in FEATURES} == {
        "amount_usd": None,
        "gas_price": None,
        "tx_count_24h": None,
        "address_age_days": None,
        "avg_tx_value": None,
        "chain": "tron",
        "token_type": None,
        "sender_country": None,
    }


def test_unknown_fields_do_not_reach_the_event(
    event_type: type[TransactionEvent],
) -> None:
    event = decoded_event(body(tx_id="a", colour="red", amount_usd=1), event_type)
    assert set(event.model_dump()) == {"tx_id", "timestamp", *FEATURES}
    assert not hasattr(event, "colour")


def test_event_model_is_built_once_per_spec() -> None:
    assert event_model(load_spec("gateway")) is event_model(load_spec())
    ethereum = event_model(load_spec("ethereum"))
    assert ethereum is not event_model(load_spec("gateway"))
    event = ethereum.model_validate({"tx_id": "eth-1", "value": 6e22, "gas": "21000"})
    assert event.model_dump(include={"value", "gas"}) == {"value": 6e22, "gas": 21000}
    assert not hasattr(event, "amount_usd")


# ----------------------------------------------------------------- bad inputs

BAD: list[tuple[str, bytes | None, str, str]] = [
    # (id, message value, dead letter kind, what the reason must name)
    # booleans are not numbers
    ("bool-float", body(tx_id="a", amount_usd=True), "invalid_field", "amount_usd"),
    ("bool-false", body(tx_id="a", gas_price=False), "invalid_field", "gas_price"),
    ("bool-int", body(tx_id="a", tx_count_24h=True), "invalid_field", "tx_count_24h"),
    ("bool-timestamp", body(tx_id="a", timestamp=True), "invalid_field", "timestamp"),
    # NaN / Infinity as strings
    ("nan-string", body(tx_id="a", amount_usd="NaN"), "invalid_field", "amount_usd"),
    ("nan-lower", body(tx_id="a", avg_tx_value="nan"), "invalid_field", "avg_tx_value"),
    ("inf-string", body(tx_id="a", gas_price="Infinity"), "invalid_field", "gas_price"),
    (
        "neg-inf-string",
        body(tx_id="a", amount_usd="-inf"),
        "invalid_field",
        "amount_usd",
    ),
    (
        "inf-int-string",
        body(tx_id="a", tx_count_24h="inf"),
        "invalid_field",
        "tx_count_24h",
    ),
    ("huge-string", body(tx_id="a", amount_usd="1e400"), "invalid_field", "amount_usd"),
    # NaN / Infinity as bare JSON tokens are not JSON
    ("nan-token", b'{"tx_id": "a", "amount_usd": NaN}', "not_json", "JSON"),
    ("inf-token", b'{"tx_id": "a", "amount_usd": Infinity}', "not_json", "JSON"),
    ("neg-inf-token", b'{"tx_id": "a", "gas_price": -Infinity}', "not_json", "JSON"),
    # numbers that overflow a double when parsed: valid JSON, refused by field
    ("huge-json-number", b'{"tx_id": "a", "amount_usd": 1e400}', "invalid_field", "amount_usd"),
    ("huge-json-timestamp", b'{"tx_id": "a", "timestamp": 1e400}', "invalid_field", "timestamp"),
    # negatives
    ("negative-float", body(tx_id="a", amount_usd=-1), "invalid_field", "amount_usd"),
    ("negative-small", body(tx_id="a", gas_price=-0.01), "invalid_field", "gas_price"),
    (
        "negative-string",
        body(tx_id="a", amount_usd="-3"),
        "invalid_field",
        "amount_usd",
    ),
    ("negative-int", body(tx_id="a", tx_count_24h=-1), "invalid_field", "tx_count_24h"),
    ("negative-epoch", body(tx_id="a", timestamp=-1), "invalid_field", "timestamp"),
    # out of range
    ("above-max", body(tx_id="a", amount_usd=1e9 + 1), "invalid_field", "amount_usd"),
    ("above-gas", body(tx_id="a", gas_price=10_000_001), "invalid_field", "gas_price"),
    (
        "above-age",
        body(tx_id="a", address_age_days=36_501),
        "invalid_field",
        "address_age_days",
    ),
    (
        "above-count",
        body(tx_id="a", tx_count_24h=1_000_001),
        "invalid_field",
        "tx_count_24h",
    ),
    (
        "epoch-year-10000",
        body(tx_id="a", timestamp=253_402_300_800_000),
        "invalid_field",
        "timestamp",
    ),
    (
        "huge-float",
        body(tx_id="a", avg_tx_value=1e300),
        "invalid_field",
        "avg_tx_value",
    ),
    (
        "huge-int",
        b'{"tx_id": "a", "tx_count_24h": 99999999999999999999999}',
        "invalid_field",
        "tx_count_24h",
    ),
    (
        "huge-float-for-int",
        body(tx_id="a", address_age_days=1e300),
        "invalid_field",
        "address_age_days",
    ),
    # fractional counts
    (
        "fraction-int",
        body(tx_id="a", tx_count_24h=2.5),
        "invalid_field",
        "tx_count_24h",
    ),
    (
        "fraction-int-string",
        body(tx_id="a", tx_count_24h="2.5"),
        "invalid_field",
        "tx_count_24h",
    ),
    (
        "fraction-age",
        body(tx_id="a", address_age_days=0.1),
        "invalid_field",
        "address_age_days",
    ),
    # wrong types
    (
        "text-number",
        body(tx_id="a", avg_tx_value="lots"),
        "invalid_field",
        "avg_tx_value",
    ),
    (
        "empty-string-number",
        body(tx_id="a", amount_usd=""),
        "invalid_field",
        "amount_usd",
    ),
    (
        "hex-string-number",
        body(tx_id="a", amount_usd="0x10"),
        "invalid_field",
        "amount_usd",
    ),
    ("list-number", body(tx_id="a", amount_usd=[1]), "invalid_field", "amount_usd"),
    (
        "object-number",
        body(tx_id="a", gas_price={"v": 1}),
        "invalid_field",
        "gas_price",
    ),
    ("text-int", body(tx_id="a", tx_count_24h="ten"), "invalid_field", "tx_count_24h"),
    (
        "text-timestamp",
        body(tx_id="a", timestamp="yesterday"),
        "invalid_field",
        "timestamp",
    ),
    (
        "list-timestamp",
        body(tx_id="a", timestamp=[2026, 1, 1]),
        "invalid_field",
        "timestamp",
    ),
    # tx_id
    ("tx-id-empty", body(tx_id=""), "invalid_field", "tx_id"),
    ("tx-id-spaces", body(tx_id="   "), "invalid_field", "tx_id"),
    ("tx-id-whitespace", body(tx_id="\t\n "), "invalid_field", "tx_id"),
    ("tx-id-129", body(tx_id="t" * 129), "invalid_field", "tx_id"),
    ("tx-id-int", body(tx_id=5), "invalid_field", "tx_id"),
    ("tx-id-float", body(tx_id=5.0), "invalid_field", "tx_id"),
    ("tx-id-bool", body(tx_id=True), "invalid_field", "tx_id"),
    ("tx-id-list", body(tx_id=["a"]), "invalid_field", "tx_id"),
    ("tx-id-object", body(tx_id={"id": "a"}), "invalid_field", "tx_id"),
    # categoricals
    ("categorical-65", body(tx_id="a", chain="z" * 65), "invalid_field", "chain"),
    ("categorical-int", body(tx_id="a", chain=42), "invalid_field", "chain"),
    (
        "categorical-bool",
        body(tx_id="a", token_type=True),
        "invalid_field",
        "token_type",
    ),
    ("categorical-list", body(tx_id="a", chain=["eth"]), "invalid_field", "chain"),
    (
        "categorical-object",
        body(tx_id="a", sender_country={"c": "US"}),
        "invalid_field",
        "sender_country",
    ),
    # not UTF-8
    ("not-utf8-ff", b'{"tx_id": "x", "chain": "\xff"}', "not_utf8", "UTF-8"),
    ("not-utf8-latin1", '{"tx_id": "café"}'.encode("latin-1"), "not_utf8", "UTF-8"),
    ("not-utf8-utf16", '{"tx_id": "a"}'.encode("utf-16"), "not_utf8", "UTF-8"),
    # not JSON
    ("truncated-json", b'{"tx_id": "x", ', "not_json", "JSON"),
    ("single-quotes", b"{'tx_id': 'x'}", "not_json", "JSON"),
    ("form-encoded", b"tx_id=x&amount_usd=5", "not_json", "JSON"),
    ("trailing-garbage", b'{"tx_id": "x"} extra', "not_json", "JSON"),
    ("whitespace-only", b"   ", "not_json", "JSON"),
    ("utf8-bom", b'\xef\xbb\xbf{"tx_id": "x"}', "not_json", "JSON"),
    # JSON, but not an object
    ("array", b"[1, 2, 3]", "not_object", "list"),
    ("string", b'"tx-1"', "not_object", "str"),
    ("integer", b"12", "not_object", "int"),
    ("float", b"12.5", "not_object", "float"),
    ("true", b"true", "not_object", "bool"),
    ("null", b"null", "not_object", "object"),
    # empty
    ("empty-bytes", b"", "empty", "no value"),
    ("tombstone", None, "empty", "no value"),
    # missing tx_id
    ("empty-object", b"{}", "missing_tx_id", "tx_id"),
    ("no-tx-id", body(amount_usd=5), "missing_tx_id", "tx_id"),
    ("null-tx-id", body(tx_id=None, amount_usd=5), "missing_tx_id", "tx_id"),
]


@pytest.mark.parametrize(
    ("value", "kind", "named"),
    [(v, k, n) for _, v, k, n in BAD],
    ids=[i for i, _, _, _ in BAD],
)
def test_bad_event_is_a_dead_letter(
    value: bytes | None, kind: str, named: str, event_type: type[TransactionEvent]
) -> None:
    letter = dead(value, event_type)
    assert letter.error == kind, letter.reason
    assert named in letter.reason
    assert "\n" not in letter.reason
    if kind == "invalid_field":
        # 'field: problem (got value)': the offending field leads the reason.
        assert letter.reason.startswith(f"{named}: "), letter.reason
        assert letter.reason.count(";") == 0, letter.reason
    assert letter.source == SOURCE
    assert letter.key == "key"


@pytest.mark.parametrize(
    ("field", "literal"), [("amount_usd", "1e400"), ("timestamp", "-1e400")]
)
def test_number_overflowing_a_double_names_its_field(
    field: str, literal: str, event_type: type[TransactionEvent]
) -> None:
    letter = dead(f'{{"tx_id": "a", "{field}": {literal}}}'.encode(), event_type)
    assert letter.error == "invalid_field"
    assert letter.reason.startswith(f"{field}: ")


def test_every_bad_field_is_named_on_one_line(
    event_type: type[TransactionEvent],
) -> None:
    letter = dead(
        body(tx_id="a", amount_usd=-1, tx_count_24h=2.5, chain=7, colour="ok"),
        event_type,
    )
    assert letter.error == "invalid_field"
    parts = letter.reason.split("; ")
    assert [part.split(":")[0] for part in parts] == [
        "amount_usd",
        "tx_count_24h",
        "chain",
    ]
    assert "\n" not in letter.reason
    assert "colour" not in letter.reason


def test_reason_quotes_the_offending_value(event_type: type[TransactionEvent]) -> None:
    letter = dead(body(tx_id="a", avg_tx_value="lots"), event_type)
    assert "(got 'lots')" in letter.reason


def test_reason_does_not_copy_a_huge_value(event_type: type[TransactionEvent]) -> None:
    letter = dead(body(tx_id="a", chain="z" * 1_000_000), event_type)
    assert letter.reason.startswith("chain: ")
    assert len(letter.reason) < 200 + QUOTE_CHARS
    # The payload is cut so the dead letter stays publishable (the broker's
    # 1 MB limit); the whole message stays in the input topic.
    assert letter.payload is not None and len(letter.payload) == 64 * 1024
    assert letter.payload_truncated


# -------------------------------------------------------------- dead letters


def test_dead_letter_keeps_utf8_payload_as_text(
    event_type: type[TransactionEvent],
) -> None:
    value = '{"tx_id": "ü", "amount_usd": -5}'.encode()
    letter = decode(value, "clé".encode(), SOURCE, event_type)
    assert isinstance(letter, DeadLetter)
    assert letter.payload == value.decode("utf-8")
    assert letter.payload_encoding == "utf-8"
    assert letter.key == "clé"
    assert letter.source == SOURCE
    assert letter.failed_at.tzinfo is not None
    assert abs(datetime.now(UTC) - letter.failed_at) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "value",
    [b'{"tx_id": "x", "chain": "\xff"}', b"\x00\x9f\x92\x96 raw", bytes(range(256))],
    ids=["bad-byte-in-json", "binary", "all-bytes"],
)
def test_dead_letter_keeps_non_utf8_payload_as_base64(
    value: bytes, event_type: type[TransactionEvent]
) -> None:
    letter = dead(value, event_type)
    assert letter.error == "not_utf8"
    assert letter.payload_encoding == "base64"
    assert letter.payload is not None
    assert base64.b64decode(letter.payload, validate=True) == value


def test_dead_letter_keeps_non_utf8_key_as_base64(
    event_type: type[TransactionEvent],
) -> None:
    letter = decode(b"[]", b"\xff\xfe", SOURCE, event_type)
    assert isinstance(letter, DeadLetter)
    assert letter.payload == "[]"
    assert letter.key is not None
    assert base64.b64decode(letter.key) == b"\xff\xfe"


@pytest.mark.parametrize(
    ("value", "payload"), [(None, None), (b"", "")], ids=["tombstone", "empty-bytes"]
)
def test_empty_dead_letter_payload(
    value: bytes | None, payload: str | None, event_type: type[TransactionEvent]
) -> None:
    letter = decode(value, None, SOURCE, event_type)
    assert isinstance(letter, DeadLetter)
    assert (letter.error, letter.payload, letter.key) == ("empty", payload, None)


def test_dead_letter_json_round_trips(event_type: type[TransactionEvent]) -> None:
    letter = dead(b'{"tx_id": "x", "chain": "\xff"}', event_type)
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again == letter
    document = orjson.loads(letter.model_dump_json())
    assert document["source"] == {"topic": "transactions", "partition": 3, "offset": 41}
    assert document["payload_encoding"] == "base64"


# ------------------------------------------------------------------- schemas


def test_schemas_build_for_every_contract() -> None:
    event = event_model(GATEWAY).model_json_schema()
    assert event["required"] == ["tx_id"]
    assert set(event["properties"]) == {"tx_id", "timestamp", *FEATURES}

    result = RiskResult.model_json_schema()
    assert {
        "tx_id",
        "fraud_probability",
        "is_flagged",
        "top_features",
        "imputed",
    } <= set(result["properties"])
    letter = DeadLetter.model_json_schema()
    assert set(letter["properties"]["error"]["enum"]) == {
        "empty",
        "not_utf8",
        "not_json",
        "not_object",
        "missing_tx_id",
        "invalid_field",
        "duplicate_key",
    }
    control = ControlMessage.model_json_schema()
    assert {"activate", "shadow"} <= set(control["properties"]["action"]["enum"])


def _clean_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TXRISK_", "KAFKA_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    return env


def _numeric_bounds(schema: dict[str, Any]) -> tuple[str, float, float]:
    (branch,) = [b for b in schema["anyOf"] if b.get("type") != "null"]
    return branch["type"], branch["minimum"], branch["maximum"]


def test_schema_command_writes_four_valid_json_files(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    done = subprocess.run(
        [sys.executable, "-m", "scorer", "schema", "--out", str(out)],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names = {
        "event.schema.json",
        "risk-result.schema.json",
        "dead-letter.schema.json",
        "control-message.schema.json",
    }
    assert {p.name for p in out.iterdir()} == names
    schemas = {p.name: orjson.loads(p.read_bytes()) for p in out.iterdir()}
    for name, schema in schemas.items():
        assert schema["type"] == "object", name
        assert schema["properties"], name
        assert name in done.stdout

    event = schemas["event.schema.json"]
    assert set(GATEWAY.features) <= set(event["properties"])
    assert event["required"] == ["tx_id"]
    for name, field in GATEWAY.numeric.items():
        kind, low, high = _numeric_bounds(event["properties"][name])
        assert kind == ("integer" if field.integer else "number"), name
        assert (low, high) == (field.min, field.max), name
    for name, cat in GATEWAY.categorical.items():
        (branch,) = [
            b for b in event["properties"][name]["anyOf"] if b.get("type") != "null"
        ]
        assert branch == {"type": "string", "maxLength": cat.max_length}, name

    result = schemas["risk-result.schema.json"]["properties"]["fraud_probability"]
    assert (result["minimum"], result["maximum"]) == (0.0, 1.0)


def test_schema_to_stdout_follows_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert scorer_main(["schema", "--spec", "ethereum"]) == 0
    schemas = orjson.loads(capsys.readouterr().out)
    assert set(schemas) == {"event", "risk-result", "dead-letter", "control-message"}
    ethereum = load_spec("ethereum")
    assert set(schemas["event"]["properties"]) == {
        "tx_id",
        "timestamp",
        *ethereum.columns,
    }


def test_timezone_offset_is_kept_as_the_same_instant(
    event_type: type[TransactionEvent],
) -> None:
    event = decoded_event(
        body(tx_id="a", timestamp="2026-01-01T05:30:00+05:30"), event_type
    )
    assert event.timestamp == JAN_1_2026
    assert event.timestamp is not None
    assert event.timestamp.utcoffset() == timezone(
        timedelta(hours=5, minutes=30)
    ).utcoffset(None)

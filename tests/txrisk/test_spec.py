"""Unit tests of feature specs: built-in and TOML file specs, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from txrisk.errors import SpecError, UserError
from txrisk.spec import (
    BUILTIN_SPECS,
    FLOAT32_MAX,
    CategoricalField,
    FeatureSpec,
    NumericField,
    load_spec,
)

HEADER = 'name = "shop"\nlabel_field = "fraud"\n'

VALID = (
    HEADER
    + """
id_field = "order_id"
timestamp_field = "ts"
timestamp_unit = "s"

[numeric.basket_eur]
min = 0.5
max = 5e4

[numeric.items]
max = 500
integer = true

[categorical.channel]
max_length = 12
"""
)


def write_spec(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("source", "name", "columns", "label"),
    [
        (
            "gateway",
            "crypto-gateway",
            [
                "amount_usd",
                "gas_price",
                "tx_count_24h",
                "address_age_days",
                "avg_tx_value",
                "chain",
                "token_type",
                "sender_country",
            ],
            "is_fraud",
        ),
        (None, "crypto-gateway", None, "is_fraud"),
        (
            "ethereum",
            "ethereum-transactions",
            ["gas", "receipt_gas_used", "gas_price", "value"],
            "class",
        ),
    ],
    ids=["gateway", "default", "ethereum"],
)
def test_builtin_specs_load(
    source: str | None, name: str, columns: list[str] | None, label: str
) -> None:
    spec = load_spec(source)
    assert spec.name == name
    assert spec.label_field == label
    if columns is not None:
        assert spec.columns == columns
    for field_name, field in spec.numeric.items():
        assert field.min <= field.max <= FLOAT32_MAX, field_name
    assert spec.features == set(spec.columns)


def test_every_builtin_name_loads() -> None:
    names = {load_spec(builtin).name for builtin in BUILTIN_SPECS}
    assert len(names) == len(BUILTIN_SPECS)


def test_gateway_details() -> None:
    spec = load_spec("gateway")
    assert spec.numeric["tx_count_24h"] == NumericField(min=0, max=1e6, integer=True)
    assert spec.numeric["amount_usd"] == NumericField(min=0, max=1e9, integer=False)
    assert spec.categorical["chain"] == CategoricalField(max_length=64)
    assert (spec.id_field, spec.id_prefix, spec.timestamp_field) == (
        "tx_id",
        None,
        "timestamp",
    )


def test_ethereum_details() -> None:
    spec = load_spec("ethereum")
    assert (spec.id_prefix, spec.timestamp_field, spec.timestamp_unit) == (
        "eth-",
        "block_timestamp",
        "s",
    )
    assert spec.categorical == {}
    assert spec.numeric["value"].max == 1e30


@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
def test_toml_file_spec_loads(tmp_path: Path, as_path: bool) -> None:
    path = write_spec(tmp_path, VALID)
    spec = load_spec(path if as_path else str(path))
    assert spec == FeatureSpec(
        name="shop",
        label_field="fraud",
        id_field="order_id",
        timestamp_field="ts",
        timestamp_unit="s",
        numeric={
            "basket_eur": NumericField(min=0.5, max=5e4),
            "items": NumericField(min=0, max=500, integer=True),
        },
        categorical={"channel": CategoricalField(max_length=12)},
    )
    assert spec.columns == ["basket_eur", "items", "channel"]


def test_toml_defaults(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, HEADER + "[numeric.a]\n[categorical.b]\n"))
    assert spec.numeric["a"] == NumericField(min=0.0, max=1e12, integer=False)
    assert spec.categorical["b"].max_length == 64
    assert (spec.id_field, spec.timestamp_field, spec.timestamp_unit) == (
        "tx_id",
        None,
        "ms",
    )


def test_a_file_named_like_a_builtin_is_the_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--spec gateway` means the built-in even when ./gateway exists.
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, HEADER + "[numeric.a]\n", name="gateway")
    assert load_spec("gateway").name == "crypto-gateway"


BAD: list[tuple[str, str | None, list[str]]] = [
    # (id, file text or None for a missing file, words the message must contain)
    ("missing-file", None, ["cannot read it", "No such file", "gateway, ethereum"]),
    ("invalid-toml", HEADER + "[numeric.a\nmin = 0\n", ["not valid TOML"]),
    ("invalid-toml-value", 'name = "x"\nlabel_field =\n', ["not valid TOML", "line 2"]),
    (
        "unknown-top-key",
        HEADER + 'colour = "red"\n[numeric.a]\n',
        ["colour", "Extra inputs"],
    ),
    (
        "unknown-field-key",
        HEADER + "[numeric.a]\nmaximum = 3\n",
        ["numeric.a.maximum", "Extra"],
    ),
    ("unknown-section", HEADER + "[numbers.a]\n[numeric.b]\n", ["numbers", "Extra"]),
    (
        "min-above-max",
        HEADER + "[numeric.a]\nmin = 5\nmax = 1\n",
        ["numeric.a", "min 5.0", "max 1.0"],
    ),
    (
        "max-beyond-float32",
        HEADER + "[numeric.a]\nmax = 1e39\n",
        ["numeric.a.max", "less than"],
    ),
    ("max-infinite", HEADER + "[numeric.a]\nmax = inf\n", ["numeric.a.max"]),
    ("max-nan", HEADER + "[numeric.a]\nmax = nan\n", ["numeric.a.max"]),
    (
        "both-kinds",
        HEADER + "[numeric.a]\n[categorical.a]\n",
        ["both numeric and categorical", "'a'"],
    ),
    ("no-features", HEADER, ["declares no numeric or categorical fields"]),
    (
        "empty-tables",
        HEADER + "[numeric]\n[categorical]\n",
        ["no numeric or categorical"],
    ),
    ("reserved-name", HEADER + "[numeric.tx_id]\n", ["reserved", "tx_id"]),
    ("label-as-feature", HEADER + "[numeric.fraud]\n", ["reserved", "fraud"]),
    ("no-label", 'name = "x"\n[numeric.a]\n', ["label_field", "required"]),
    (
        "zero-max-length",
        HEADER + "[categorical.c]\nmax_length = 0\n",
        ["categorical.c.max_length"],
    ),
    ("bad-unit", HEADER + 'timestamp_unit = "us"\n[numeric.a]\n', ["timestamp_unit"]),
    ("wrong-type", HEADER + '[numeric.a]\nmax = "big"\n', ["numeric.a.max"]),
]


@pytest.mark.parametrize(
    ("text", "words"), [(t, w) for _, t, w in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_spec_raises_one_clear_spec_error(
    tmp_path: Path, text: str | None, words: list[str]
) -> None:
    path = tmp_path / "spec.toml" if text is None else write_spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert "\n" not in message
    assert message.startswith(f"--spec {path}: "), message
    for word in words:
        assert word in message, (word, message)


def test_directory_is_not_a_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"cannot read it"):
        load_spec(tmp_path)


def test_unknown_builtin_name_is_a_missing_file() -> None:
    with pytest.raises(
        SpecError, match=r"--spec bitcoin: cannot read it .*gateway, ethereum"
    ):
        load_spec("bitcoin")


def test_not_utf8_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_bytes(b'name = "caf\xe9"\nlabel_field = "y"\n[numeric.a]\n')
    with pytest.raises(SpecError, match=r"--spec .*spec\.toml: .*UTF-8"):
        load_spec(path)


@pytest.mark.parametrize("bound", ["min = nan", "min = -1e39", "min = -inf"])
def test_non_finite_or_float32_overflowing_bounds_are_refused(
    tmp_path: Path, bound: str
) -> None:
    with pytest.raises(SpecError):
        load_spec(write_spec(tmp_path, HEADER + f"[numeric.a]\n{bound}\n"))

"""Tests of the synthetic gateway-payment generator and its table writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trainer.generate import generate, write_table

COLUMNS = [
    "tx_id",
    "timestamp",
    "amount_usd",
    "gas_price",
    "tx_count_24h",
    "address_age_days",
    "avg_tx_value",
    "chain",
    "token_type",
    "sender_country",
    "is_fraud",
]
FLOATS = ["amount_usd", "gas_price", "avg_tx_value"]
INTEGERS = ["tx_count_24h", "address_age_days"]
NUMERIC = FLOATS + INTEGERS
CATEGORICAL = ["chain", "token_type", "sender_country"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # Large enough for stable rates and a visible long tail, and shared by the
    # statistical tests so the module stays fast.
    return generate(50_000, seed=3)


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    # String columns read back as object (pandas 2) or str (pandas 3) with NaN
    # or None for missing; compare them as plain objects with None.
    out = frame.copy()
    for name in ["tx_id", *CATEGORICAL]:
        column = out[name].astype(object)
        out[name] = column.where(column.notna(), None)
    return out


def test_same_seed_gives_identical_frame() -> None:
    pd.testing.assert_frame_equal(generate(2_000, 7), generate(2_000, 7))


def test_different_seed_gives_different_frame() -> None:
    first, second = generate(2_000, 7), generate(2_000, 8)
    assert not first.equals(second)
    assert set(first["tx_id"]).isdisjoint(second["tx_id"])
    assert not np.allclose(
        first["amount_usd"].fillna(-1), second["amount_usd"].fillna(-1)
    )


def test_fraud_rate_is_about_one_percent(frame: pd.DataFrame) -> None:
    rate = frame["is_fraud"].mean()
    assert 0.008 <= rate <= 0.013, rate
    assert set(frame["is_fraud"].unique()) == {0, 1}


def test_columns_and_dtypes(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 50_000
    assert frame["timestamp"].dtype == "datetime64[ns, UTC]"
    for name in FLOATS:
        assert frame[name].dtype == np.float64, name
    for name in INTEGERS:
        assert frame[name].dtype == "Int64", name
    for name in ["tx_id", *CATEGORICAL]:
        assert pd.api.types.is_string_dtype(frame[name].dtype), name
    assert frame["is_fraud"].dtype == np.int64


def test_values_are_plausible(frame: pd.DataFrame) -> None:
    assert frame["tx_id"].is_unique
    assert frame["tx_id"].str.fullmatch(r"tx-[0-9a-f]{16}").all()

    stamps = frame["timestamp"]
    assert stamps.is_monotonic_increasing
    assert stamps.min() >= pd.Timestamp("2026-01-01T00:00:00Z")
    assert stamps.max() < pd.Timestamp("2026-01-31T00:00:00Z")
    # Arrivals cover the whole month rather than bunching at its start.
    assert stamps.max() - stamps.min() > pd.Timedelta(days=29)

    for name in NUMERIC:
        assert (frame[name].dropna() >= 0).all(), name
    assert frame["amount_usd"].max() < 1e9
    assert frame["avg_tx_value"].max() < 1e9
    # A long right tail: the largest amount dwarfs the median.
    assert frame["amount_usd"].max() > 100 * frame["amount_usd"].median()
    assert frame["address_age_days"].max() <= 36_500


def test_missing_values_only_in_features(frame: pd.DataFrame) -> None:
    for name in NUMERIC:
        share = frame[name].isna().mean()
        # Generated at 2.5-4.5% per field; the margin absorbs sampling noise.
        assert 0.015 <= share <= 0.055, (name, share)
    for name in CATEGORICAL:
        assert frame[name].isna().any(), name
    for name in ["tx_id", "timestamp", "is_fraud"]:
        assert not frame[name].isna().any(), name


def test_categories_have_a_long_tail(frame: pd.DataFrame) -> None:
    chains = frame["chain"].value_counts(normalize=True)
    assert len(chains) >= 20
    assert chains.iloc[0] < 0.6
    assert frame["token_type"].nunique() >= 10
    countries = frame["sender_country"].value_counts(normalize=True)
    assert len(countries) >= 80
    assert countries.iloc[0] < 0.3
    assert frame["sender_country"].dropna().str.fullmatch(r"[A-Z]{2}").all()


def test_one_row_is_valid() -> None:
    single = generate(1, 0)
    assert list(single.columns) == COLUMNS
    assert len(single) == 1


@pytest.mark.parametrize("rows", [0, -5])
def test_invalid_rows_raise(rows: int) -> None:
    with pytest.raises(ValueError, match=rf"rows.*{rows}"):
        generate(rows, 0)


def test_negative_seed_raises() -> None:
    with pytest.raises(ValueError, match=r"seed.*-1"):
        generate(10, -1)


def test_csv_round_trip(tmp_path: Path) -> None:
    original = generate(3_000, 5)
    path = tmp_path / "payments.csv"
    write_table(original, path)

    text = path.read_text().splitlines()
    assert text[0].split(",") == COLUMNS
    stamp = text[1].split(",")[1]
    assert stamp.startswith("2026-01-01T") and stamp.endswith("Z"), stamp

    back = pd.read_csv(path)
    back["timestamp"] = pd.to_datetime(
        back["timestamp"], utc=True, format="ISO8601"
    ).astype("datetime64[ns, UTC]")
    for name in INTEGERS:
        back[name] = back[name].astype("Int64")
    pd.testing.assert_frame_equal(_comparable(back), _comparable(original))


def test_parquet_round_trip(tmp_path: Path) -> None:
    original = generate(3_000, 5)
    path = tmp_path / "payments.parquet"
    write_table(original, path)

    back = pd.read_parquet(path)
    assert back["timestamp"].dtype == "datetime64[ns, UTC]"
    for name in INTEGERS:
        assert back[name].dtype == "Int64", name
    pd.testing.assert_frame_equal(_comparable(back), _comparable(original))


def test_bad_suffix_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    message = r"--out must end in \.csv or \.parquet, got '.*x\.txt'"
    with pytest.raises(ValueError, match=message):
        write_table(generate(10, 0), path)
    assert not path.exists()


def _pipeline(model: object, scale: bool) -> Pipeline:
    numbers = [SimpleImputer(strategy="median")]
    if scale:
        numbers.append(StandardScaler())
    categories = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    prepare = ColumnTransformer(
        [("num", make_pipeline(*numbers), NUMERIC), ("cat", categories, CATEGORICAL)]
    )
    return make_pipeline(prepare, model)


def test_signal_is_non_linear() -> None:
    # The point of the generator: a tree ensemble finds the fraud pattern, a
    # linear model on the same columns mostly cannot.
    data = generate(30_000, seed=0)
    x = data[NUMERIC + CATEGORICAL].copy()
    x[NUMERIC] = x[NUMERIC].astype("float64")
    # sklearn's imputers want one missing marker: NaN in plain object columns.
    labels = x[CATEGORICAL].astype(object)
    x[CATEGORICAL] = labels.where(labels.notna(), np.nan)
    y = data["is_fraud"]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )

    # random_state only pins the early-stopping split, so the test cannot flake.
    hgb = _pipeline(HistGradientBoostingClassifier(random_state=0), scale=False)
    hgb.fit(x_train, y_train)
    hgb_auc = roc_auc_score(y_test, hgb.predict_proba(x_test)[:, 1])

    linear = _pipeline(LogisticRegression(max_iter=2_000), scale=True)
    linear.fit(x_train, y_train)
    linear_auc = roc_auc_score(y_test, linear.predict_proba(x_test)[:, 1])

    print(f"HGB ROC AUC {hgb_auc:.4f}, logistic regression {linear_auc:.4f}")
    assert hgb_auc >= 0.88, (hgb_auc, linear_auc)
    assert hgb_auc - linear_auc >= 0.04, (hgb_auc, linear_auc)

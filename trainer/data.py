"""Read a labelled training file through its feature spec."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from txrisk.bundle import DataFingerprint, file_sha256
from txrisk.errors import DataError
from txrisk.frame import normalise_training_frame
from txrisk.spec import FeatureSpec

logger = logging.getLogger(__name__)

READABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True)
class Dataset:
    """Features, labels, ids and event times of one training file."""

    X: pd.DataFrame
    y: np.ndarray
    ids: pd.Series
    timestamps: pd.Series | None
    fingerprint: DataFingerprint


def load_dataset(path: Path, spec: FeatureSpec) -> Dataset:
    """Load and check a file against `spec`; every mismatch is one `DataError`."""
    raw = _read_table(path)

    # A spec with an id prefix names rows itself unless the file has ids.
    named_rows = spec.id_prefix is not None and spec.id_field not in raw.columns
    expected = [spec.label_field, *spec.columns]
    if not named_rows:
        expected.append(spec.id_field)
    if spec.timestamp_field:
        expected.append(spec.timestamp_field)
    missing = [name for name in expected if name not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: columns {missing} named by spec {spec.name!r} are missing "
            f"(the file has {list(raw.columns)[:12]}); pass the matching --spec"
        )
    if raw.empty:
        raise DataError(f"{path}: has no rows")

    y = _labels(path, raw[spec.label_field])
    try:
        X = normalise_training_frame(spec, raw)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: a numeric column holds text ({exc})") from exc
    _check_ranges(path, spec, X)

    if named_rows:
        ids = pd.Series(
            [f"{spec.id_prefix}{i}" for i in range(len(raw))], index=raw.index
        )
    else:
        ids = raw[spec.id_field].astype(str)

    timestamps = None
    if spec.timestamp_field:
        timestamps = _timestamps(path, raw[spec.timestamp_field], spec.timestamp_unit)

    fingerprint = DataFingerprint(
        source=path.name,
        rows=len(raw),
        fraud_rate=float(y.mean()),
        sha256=file_sha256(path),
    )
    logger.info(
        "data loaded source=%s rows=%d fraud_rate=%.4f", path.name, len(raw), y.mean()
    )
    return Dataset(X=X, y=y, ids=ids, timestamps=timestamps, fingerprint=fingerprint)


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if not name.endswith(READABLE_SUFFIXES):
        raise DataError(f"--data {path}: must end in {', '.join(READABLE_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")

    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path, low_memory=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise DataError(f"--data {path}: cannot be read as a table ({exc})") from exc


def _labels(path: Path, column: pd.Series) -> np.ndarray:
    if column.isna().any():
        raise DataError(
            f"{path}: label {column.name!r} has {column.isna().sum()} blanks"
        )

    values = set(pd.unique(column))
    if not values <= {0, 1}:
        shown = sorted(map(str, values - {0, 1}))[:5]
        raise DataError(f"{path}: label {column.name!r} must be 0 or 1, found {shown}")
    if len(values) < 2:
        raise DataError(
            f"{path}: label {column.name!r} has a single class ({values.pop()}); "
            "a fraud model needs both fraud and legitimate rows"
        )
    return column.to_numpy(dtype=np.int64)


def _check_ranges(path: Path, spec: FeatureSpec, X: pd.DataFrame) -> None:
    for name, field in spec.numeric.items():
        column = X[name]
        bad = column.notna() & ((column < field.min) | (column > field.max))
        if bad.any():
            first = bad.idxmax()
            raise DataError(
                f"{path}: {name} has {int(bad.sum())} values outside "
                f"[{field.min:g}, {field.max:g}] (first at row {first}: "
                f"{column[first]:g}); fix the data or widen the range in the spec"
            )


def _timestamps(path: Path, column: pd.Series, unit: str) -> pd.Series:
    try:
        if pd.api.types.is_numeric_dtype(column):
            return pd.to_datetime(column, unit=unit, utc=True)
        return pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(
            f"{path}: timestamp {column.name!r} cannot be parsed ({exc})"
        ) from exc


def to_events(dataset: Dataset, spec: FeatureSpec, rows: np.ndarray) -> list[dict]:
    """The given rows as gateway events: JSON-ready dicts in the event contract."""
    frame = dataset.X.iloc[rows]
    events: list[dict] = [{"tx_id": tx_id} for tx_id in dataset.ids.iloc[rows]]

    if dataset.timestamps is not None:
        # as_unit: pandas may hold times in s, ms, us or ns depending on source.
        millis = dataset.timestamps.iloc[rows].dt.as_unit("ms").astype("int64")
        for event, ms in zip(events, millis, strict=True):
            event["timestamp"] = int(ms)

    for name, field in spec.numeric.items():
        for event, value in zip(events, frame[name].to_numpy(), strict=True):
            if np.isnan(value):
                event[name] = None
            else:
                event[name] = int(value) if field.integer else float(value)

    for name in spec.categorical:
        for event, value in zip(events, frame[name].to_numpy(), strict=True):
            event[name] = None if pd.isna(value) else str(value)

    return events

"""The fitted `prepare` step of a pipeline, replayed as plain array operations.

scikit-learn's ColumnTransformer costs a fixed few milliseconds per call (a
DataFrame to build, one sub-pipeline per field, input validation), which on a
stream batch is more than the model itself. For the pipeline the trainer builds
(median imputer + scaler for numbers, constant imputer + one-hot encoder per
category) the same output is a handful of numpy operations on the fitted
statistics: the same float operations in the same order, so the prepared matrix
is identical to the bit. `compile_prepare` refuses any other structure, and
`ModelBundle` checks the equality on the canary batch before using it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# A value no training category can equal, to ask the encoder where unknown
# categories go.
_UNKNOWN_PROBE = "\x00txrisk-unknown-category\x00"


@dataclass(frozen=True)
class _Numeric:
    columns: list[str]
    fill: np.ndarray
    mean: np.ndarray | None
    scale: np.ndarray | None


@dataclass(frozen=True)
class _Categorical:
    column: str
    missing: Any
    index: dict[Any, int]  # category -> output column within this field
    unknown: int | None  # where unseen categories go (the infrequent column)
    width: int


class CompiledPrepare:
    """`transform(rows)` equal to the fitted ColumnTransformer's output."""

    def __init__(self, parts: list[_Numeric | _Categorical], width: int) -> None:
        self._parts = parts
        self._width = width

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.zeros((len(rows), self._width), dtype=np.float64)
        at = 0
        for part in self._parts:
            if isinstance(part, _Numeric):
                block = np.array(
                    [[_number(row.get(name)) for name in part.columns] for row in rows],
                    dtype=np.float64,
                ).reshape(len(rows), len(part.columns))
                missing = np.isnan(block)
                if missing.any():
                    block[missing] = np.broadcast_to(part.fill, block.shape)[missing]
                if part.mean is not None:
                    block -= part.mean
                if part.scale is not None:
                    block /= part.scale
                out[:, at : at + block.shape[1]] = block
                at += block.shape[1]
                continue

            lookup, unknown = part.index, part.unknown
            for i, row in enumerate(rows):
                value = row.get(part.column)
                column = lookup.get(part.missing if value is None else value, unknown)
                if column is not None:
                    out[i, at + column] = 1.0
            at += part.width
        return out


def _number(value: Any) -> float:
    return np.nan if value is None else value


def compile_prepare(prepare: ColumnTransformer) -> CompiledPrepare | None:
    """The compiled form of the trainer's prepare step, or None for anything else."""
    parts: list[_Numeric | _Categorical] = []
    for name, transformer, columns in prepare.transformers_:
        if name == "remainder":
            if not _is_dropped((name, transformer, columns)):
                return None
            continue
        part = _numeric(transformer, columns) or _categorical(transformer, columns)
        if part is None:
            return None
        parts.append(part)

    width = sum(s.stop - s.start for s in prepare.output_indices_.values())
    return CompiledPrepare(parts, width)


def _is_dropped(entry: tuple) -> bool:
    _, transformer, columns = entry
    return transformer == "drop" or len(columns) == 0


def _numeric(transformer: Any, columns: list[str]) -> _Numeric | None:
    if not isinstance(transformer, Pipeline) or len(transformer.steps) != 2:
        return None
    imputer, scaler = transformer[0], transformer[1]
    if not (
        isinstance(imputer, SimpleImputer)
        and isinstance(scaler, StandardScaler)
        and imputer.strategy in {"median", "mean"}
        and imputer.keep_empty_features
        and not imputer.add_indicator
        and _missing_is_nan(imputer.missing_values)
    ):
        return None
    return _Numeric(
        columns=list(columns),
        fill=np.asarray(imputer.statistics_, dtype=np.float64),
        mean=np.asarray(scaler.mean_) if scaler.with_mean else None,
        scale=np.asarray(scaler.scale_) if scaler.with_std else None,
    )


def _categorical(transformer: Any, columns: list[str]) -> _Categorical | None:
    if not isinstance(transformer, Pipeline) or len(transformer.steps) != 2:
        return None
    if len(columns) != 1:
        return None
    imputer, encoder = transformer[0], transformer[1]
    if not (
        isinstance(imputer, SimpleImputer)
        and isinstance(encoder, OneHotEncoder)
        and imputer.strategy == "constant"
        and not imputer.add_indicator
        and _missing_is_nan(imputer.missing_values)
        and encoder.drop is None
        and not encoder.sparse_output
    ):
        return None

    # Ask the fitted encoder itself where each category lands.
    index: dict[Any, int] = {}
    for category in encoder.categories_[0]:
        column = _lit(encoder, category)
        if column is not None:
            index[category] = column
    width = len(encoder.get_feature_names_out())
    return _Categorical(
        column=columns[0],
        missing=imputer.fill_value,
        index=index,
        unknown=_lit(encoder, _UNKNOWN_PROBE),
        width=width,
    )


def _lit(encoder: OneHotEncoder, category: Any) -> int | None:
    row = encoder.transform(np.array([[category]], dtype=object))[0]
    hot = np.flatnonzero(row)
    return int(hot[0]) if hot.size == 1 else None


def _missing_is_nan(missing_values: Any) -> bool:
    return isinstance(missing_values, float) and np.isnan(missing_values)

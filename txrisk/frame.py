"""Turn validated events or training rows into the model's input frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from txrisk.spec import FeatureSpec


def to_frame(spec: FeatureSpec, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per event, columns in spec order, missing values as NaN.

    Numeric columns are float64 so that integers and decimals score alike;
    categorical columns are object with NaN for missing, the same as pandas
    gives when it reads the training file.
    """
    columns: dict[str, Any] = {}

    for name in spec.numeric:
        values = [row.get(name) for row in rows]
        columns[name] = np.array(
            [np.nan if v is None else v for v in values], dtype=np.float64
        )

    for name in spec.categorical:
        values = [row.get(name) for row in rows]
        columns[name] = np.array(
            [np.nan if v is None else v for v in values], dtype=object
        )

    return pd.DataFrame(columns, columns=spec.columns)


def normalise_training_frame(spec: FeatureSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns of a training file in the dtypes `to_frame` gives."""
    out = pd.DataFrame(index=frame.index)

    for name in spec.numeric:
        out[name] = pd.to_numeric(frame[name], errors="raise").astype(np.float64)

    for name in spec.categorical:
        column = frame[name].astype(object)
        out[name] = column.where(column.notna(), np.nan)

    return out

"""The feature spec: which fields a model reads, their types and allowed ranges.

A spec is a small TOML file. The trainer reads training data through it and
stores it in the model bundle; the scorer validates events against the spec of
the bundle it serves, so a model trained on any spec can be served.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from txrisk.errors import SpecError

# Tree models cast their input to float32; a bound past its largest value would
# let an event through validation and then fail inside the model.
FLOAT32_MAX = 3.4028234663852886e38

BUILTIN_SPECS = ("gateway", "ethereum")


class NumericField(BaseModel):
    """A numeric feature with its inclusive range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float = Field(default=0.0, ge=-FLOAT32_MAX, allow_inf_nan=False)
    max: float = Field(default=1e12, le=FLOAT32_MAX, allow_inf_nan=False)
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> NumericField:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class CategoricalField(BaseModel):
    """A categorical feature: free text up to `max_length` characters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(default=64, ge=1, le=4096)


class FeatureSpec(BaseModel):
    """What a model reads and how its training file is laid out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    id_field: str = "tx_id"
    # When set, the training file has no id column and rows are named
    # `<id_prefix><row number>`.
    id_prefix: str | None = None
    label_field: str
    timestamp_field: str | None = None
    # Unit of a numeric timestamp column in the training file.
    timestamp_unit: Literal["s", "ms"] = "ms"
    numeric: dict[str, NumericField] = Field(default_factory=dict)
    categorical: dict[str, CategoricalField] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if not self.numeric and not self.categorical:
            raise ValueError("declares no numeric or categorical fields")
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"fields both numeric and categorical: {sorted(overlap)}")
        reserved = {"tx_id", "timestamp", self.label_field}
        clash = reserved & self.features
        if clash:
            raise ValueError(
                f"feature names clash with reserved names: {sorted(clash)}"
            )
        return self

    @property
    def features(self) -> set[str]:
        return set(self.numeric) | set(self.categorical)

    @property
    def columns(self) -> list[str]:
        """The model's input columns, numeric first, in spec order."""
        return [*self.numeric, *self.categorical]


def load_spec(source: str | Path | None = None) -> FeatureSpec:
    """Load a spec from a TOML file, or a built-in one by name (default gateway)."""
    name = "gateway" if source is None else str(source)

    if name in BUILTIN_SPECS:
        text = resources.files("txrisk.specs").joinpath(f"{name}.toml").read_text()
        where = f"built-in spec {name!r}"
    else:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(
                f"--spec {name}: not UTF-8 text (byte {exc.start})"
            ) from exc
        except OSError as exc:
            raise SpecError(
                f"--spec {name}: cannot read it ({exc.strerror}); give a TOML file "
                f"or one of {', '.join(BUILTIN_SPECS)}"
            ) from exc
        where = f"--spec {name}"

    try:
        return FeatureSpec.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{where}: not valid TOML ({exc})") from exc
    except ValidationError as exc:
        raise SpecError(f"{where}: {_one_line(exc)}") from exc


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    return "; ".join(parts)

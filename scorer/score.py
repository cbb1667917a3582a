"""Score and explain a batch of validated events with one model bundle.

This is the CPU-bound stage: the service runs it in a worker thread so the
event loop keeps the consumer's heartbeats going while a batch is scored.

A scored batch is kept as columns and written to the wire with orjson, in the
exact bytes `RiskResult.model_dump_json` would give (a test compares them):
building a validated pydantic object per event cost more than scoring it.
`ScoredBatch.results()` builds the `RiskResult` objects where they are wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from pydantic import TypeAdapter

from scorer.metrics import EXPLANATION
from scorer.publish import Encoded
from txrisk.bundle import ModelBundle
from txrisk.contracts import RiskResult, ShadowScore, TransactionEvent
from txrisk.explain import top_features

_DATETIME = TypeAdapter(datetime)


@dataclass(frozen=True)
class ScoredBatch:
    """The results of one batch, column by column."""

    rows: list[dict[str, Any]]
    probabilities: np.ndarray
    flagged: np.ndarray
    ranked: list[list[tuple[str, float]]]
    imputed: list[list[str]]
    threshold: float
    model_version: str
    scored_at: datetime

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tx_ids(self) -> list[str]:
        return [row["tx_id"] for row in self.rows]

    @property
    def flagged_count(self) -> int:
        return int(self.flagged.sum())

    def documents(self) -> list[dict[str, Any]]:
        """Each result as the plain dict of the `RiskResult` contract."""
        # Serialised once per batch the way pydantic writes datetimes.
        scored_at = _DATETIME.dump_python(self.scored_at, mode="json")
        return [
            {
                "tx_id": row["tx_id"],
                "fraud_probability": probability,
                "is_flagged": flagged,
                "threshold": self.threshold,
                "model_version": self.model_version,
                "top_features": [
                    {"feature": name, "value": row.get(name), "contribution": value}
                    for name, value in contributions
                ],
                "imputed": imputed,
                "scored_at": scored_at,
            }
            for row, probability, flagged, contributions, imputed in zip(
                self.rows,
                self.probabilities.tolist(),
                self.flagged.tolist(),
                self.ranked,
                self.imputed,
                strict=True,
            )
        ]

    def encoded(self, partitions: Sequence[int | None]) -> list[Encoded]:
        """(key, value, input partition) per result, as published."""
        return [
            (document["tx_id"].encode(), orjson.dumps(document), partition)
            for document, partition in zip(self.documents(), partitions, strict=True)
        ]

    def results(self) -> list[RiskResult]:
        return [RiskResult.model_validate(document) for document in self.documents()]


def score_events(
    bundle: ModelBundle,
    events: Sequence[TransactionEvent],
    top_k: int,
    scored_at: datetime,
    flagged_only: bool = False,
) -> ScoredBatch:
    """One `predict_proba` and one explanation pass for the whole batch.

    Each event is scored independently of the others in its batch, so an event
    gets the same probability and explanation whatever it is batched with.
    With `flagged_only`, events under the threshold get no top features.
    """
    spec = bundle.spec
    fields = spec.columns
    rows = [event.__dict__ for event in events]

    if rows:
        prepared = bundle.prepare_rows(rows)
        probabilities = np.clip(bundle.pipeline[-1].predict_proba(prepared)[:, 1], 0, 1)
    else:
        probabilities = np.zeros(0)

    threshold = bundle.metadata.threshold
    flagged = probabilities >= threshold
    explained = np.flatnonzero(flagged) if flagged_only else np.arange(len(rows))

    ranked: list[list[tuple[str, float]]] = [[] for _ in rows]
    if top_k > 0 and explained.size:
        with EXPLANATION.time():
            explanation = bundle.explainer.explain(prepared[explained])
            for row, features in zip(
                explained, top_features(explanation, fields, top_k), strict=True
            ):
                ranked[row] = features

    return ScoredBatch(
        rows=rows,
        probabilities=probabilities,
        flagged=flagged,
        ranked=ranked,
        imputed=[[name for name in fields if row.get(name) is None] for row in rows],
        threshold=threshold,
        model_version=bundle.version,
        scored_at=scored_at,
    )


def score_batch(
    bundle: ModelBundle,
    events: Sequence[TransactionEvent],
    top_k: int,
    scored_at: datetime,
) -> list[RiskResult]:
    """`score_events` as `RiskResult` objects."""
    return score_events(bundle, events, top_k, scored_at).results()


def shadow_scores(shadow: ModelBundle, scored: ScoredBatch) -> list[ShadowScore]:
    """The candidate's probabilities for events the serving model just scored."""
    if not len(scored):
        return []
    prepared = shadow.prepare_rows(scored.rows)
    probabilities = shadow.pipeline[-1].predict_proba(prepared)[:, 1]
    threshold = shadow.metadata.threshold

    return [
        ShadowScore(
            tx_id=tx_id,
            model_version=shadow.version,
            fraud_probability=min(max(float(probability), 0.0), 1.0),
            is_flagged=bool(probability >= threshold),
            active_version=scored.model_version,
            active_probability=active,
            scored_at=scored.scored_at,
        )
        for tx_id, probability, active in zip(
            scored.tx_ids, probabilities, scored.probabilities.tolist(), strict=True
        )
    ]

"""Score and explain a batch of validated events with one model bundle.

This is the CPU-bound stage: the service runs it in a worker thread so the
event loop keeps the consumer's heartbeats going while a batch is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from scorer.metrics import EXPLANATION
from txrisk.bundle import ModelBundle
from txrisk.contracts import RiskResult, ShadowScore, TopFeature, TransactionEvent
from txrisk.explain import top_features
from txrisk.frame import to_frame


def score_batch(
    bundle: ModelBundle,
    events: Sequence[TransactionEvent],
    top_k: int,
    scored_at: datetime,
) -> list[RiskResult]:
    """One `predict_proba` and one explanation pass for the whole batch.

    Each event is scored independently of the others in its batch, so an event
    gets the same probability and explanation whatever it is batched with.
    """
    if not events:
        return []
    spec = bundle.spec
    fields = spec.columns

    rows = [event.__dict__ for event in events]
    prepared = bundle.pipeline[:-1].transform(to_frame(spec, rows))
    probabilities = bundle.pipeline[-1].predict_proba(prepared)[:, 1]

    if top_k > 0:
        with EXPLANATION.time():
            ranked = top_features(bundle.explainer.explain(prepared), fields, top_k)
    else:
        ranked = [[] for _ in events]

    threshold = bundle.metadata.threshold
    results = []
    for row, probability, contributions in zip(rows, probabilities, ranked, strict=True):
        results.append(
            RiskResult(
                tx_id=row["tx_id"],
                fraud_probability=min(max(float(probability), 0.0), 1.0),
                is_flagged=bool(probability >= threshold),
                threshold=threshold,
                model_version=bundle.version,
                top_features=[
                    TopFeature(feature=name, value=row.get(name), contribution=value)
                    for name, value in contributions
                ],
                imputed=[name for name in fields if row.get(name) is None],
                scored_at=scored_at,
            )
        )
    return results


def shadow_scores(
    shadow: ModelBundle, results: Sequence[RiskResult], events: Sequence[TransactionEvent]
) -> list[ShadowScore]:
    """The candidate's probabilities for events the serving model just scored."""
    if not events:
        return []
    rows = [event.__dict__ for event in events]
    probabilities = shadow.pipeline.predict_proba(to_frame(shadow.spec, rows))[:, 1]
    threshold = shadow.metadata.threshold

    return [
        ShadowScore(
            tx_id=result.tx_id,
            model_version=shadow.version,
            fraud_probability=min(max(float(probability), 0.0), 1.0),
            is_flagged=bool(probability >= threshold),
            active_version=result.model_version,
            active_probability=result.fraud_probability,
            scored_at=result.scored_at,
        )
        for result, probability in zip(results, probabilities, strict=True)
    ]

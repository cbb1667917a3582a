"""Publish results and dead letters, and wait until the broker has them all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from txrisk.contracts import DeadLetter, RiskResult, ShadowScore

logger = logging.getLogger(__name__)

# (key, value) as they go on the wire.
Encoded = tuple[bytes | None, bytes]


def encode_result(result: RiskResult) -> Encoded:
    return result.tx_id.encode(), result.model_dump_json().encode()


def encode_shadow(score: ShadowScore) -> Encoded:
    return score.tx_id.encode(), score.model_dump_json().encode()


def encode_dead_letter(letter: DeadLetter) -> Encoded:
    key = letter.key.encode() if letter.key is not None else None
    return key, letter.model_dump_json().encode()


class Publisher:
    """Sends a batch's output and resolves only once every message is acknowledged."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        output_topic: str,
        dead_letter_topic: str,
        shadow_topic: str | None = None,
    ) -> None:
        self._producer = producer
        self._output_topic = output_topic
        self._dead_letter_topic = dead_letter_topic
        self._shadow_topic = shadow_topic

    async def publish(
        self,
        results: Sequence[Encoded],
        dead_letters: Sequence[Encoded],
        shadow: Sequence[Encoded] = (),
    ) -> None:
        """Queue everything, then wait for all acknowledgements together.

        Waiting per batch rather than per message lets the producer fill its
        own batches; a failed send raises here, before any offset is committed.
        """
        pending = []
        batches = [(self._output_topic, results), (self._dead_letter_topic, dead_letters)]
        if self._shadow_topic:
            batches.append((self._shadow_topic, shadow))
        for topic, messages in batches:
            for key, value in messages:
                pending.append(await self._producer.send(topic, value=value, key=key))

        await asyncio.gather(*pending)

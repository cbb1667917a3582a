"""Publish results and dead letters, and wait until the broker has them all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from txrisk.contracts import DeadLetter, RiskResult

logger = logging.getLogger(__name__)


class Publisher:
    """Sends a batch's output and resolves only once every message is acknowledged."""

    def __init__(
        self, producer: AIOKafkaProducer, output_topic: str, dead_letter_topic: str
    ) -> None:
        self._producer = producer
        self._output_topic = output_topic
        self._dead_letter_topic = dead_letter_topic

    async def publish(
        self, results: Sequence[RiskResult], dead_letters: Sequence[DeadLetter]
    ) -> None:
        """Queue everything, then wait for all acknowledgements together.

        Waiting per batch rather than per message lets the producer fill its
        own batches; a failed send raises here, before any offset is committed.
        """
        pending = []

        for result in results:
            pending.append(
                await self._producer.send(
                    self._output_topic,
                    value=result.model_dump_json().encode(),
                    key=result.tx_id.encode(),
                )
            )

        for letter in dead_letters:
            pending.append(
                await self._producer.send(
                    self._dead_letter_topic,
                    value=letter.model_dump_json().encode(),
                    key=letter.key.encode() if letter.key is not None else None,
                )
            )

        await asyncio.gather(*pending)

"""Publish results and dead letters, and wait until the broker has them all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from txrisk.contracts import DeadLetter, RiskResult, ShadowScore

logger = logging.getLogger(__name__)

# (key, value, partition of the input message it answers) as they go on the
# wire; the partition is None where there is no input message (HTTP).
Encoded = tuple[bytes | None, bytes, int | None]


def encode_result(result: RiskResult, partition: int | None = None) -> Encoded:
    return result.tx_id.encode(), result.model_dump_json().encode(), partition


def encode_shadow(score: ShadowScore, partition: int | None = None) -> Encoded:
    return score.tx_id.encode(), score.model_dump_json().encode(), partition


def encode_dead_letter(letter: DeadLetter) -> Encoded:
    key = letter.key.encode() if letter.key is not None else None
    return key, letter.model_dump_json().encode(), letter.source.partition


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
        self._aligned: set[str] = set()

    async def align(self, input_partitions: int) -> None:
        """Publish to the input message's partition where the counts match.

        An output topic with as many partitions as the input keeps each result
        in the partition of the event it answers: the same order per partition
        and no key hashing per message (the producer's partitioner, pure
        Python, cost as much as scoring). Other topics use the partitioner.
        """
        for topic in (self._output_topic, self._dead_letter_topic, self._shadow_topic):
            if (
                topic
                and len(await self._producer.partitions_for(topic)) == input_partitions
            ):
                self._aligned.add(topic)
        logger.info(
            "publishing by input partition to %s",
            ",".join(sorted(self._aligned)) or "-",
        )

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
        batches = [
            (self._output_topic, results),
            (self._dead_letter_topic, dead_letters),
        ]
        if self._shadow_topic:
            batches.append((self._shadow_topic, shadow))
        for topic, messages in batches:
            if topic in self._aligned:
                pending.extend(await self._send_batches(topic, messages))
                continue
            for key, value, _ in messages:
                pending.append(await self._producer.send(topic, value=value, key=key))

        await asyncio.gather(*pending)

    async def _send_batches(
        self, topic: str, messages: Sequence[Encoded]
    ) -> list[asyncio.Future]:
        """One producer batch per partition (more when one fills up)."""
        builders: dict[int, Any] = {}
        pending = []
        for key, value, partition in messages:
            assert partition is not None
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = self._producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                pending.append(
                    await self._producer.send_batch(builder, topic, partition=partition)
                )
                builder = builders[partition] = self._producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)
        for partition, builder in builders.items():
            pending.append(
                await self._producer.send_batch(builder, topic, partition=partition)
            )
        return pending

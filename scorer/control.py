"""The control listener: every scorer replica follows every model announcement.

It reads the control topic by assignment, outside the consumer group, so each
replica sees each announcement, and hands them to the model manager one at a
time.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from scorer.models import ModelManager
from txrisk.contracts import ControlMessage
from txrisk.control import poll, read_to_end
from txrisk.errors import UserError

logger = logging.getLogger(__name__)

# How long one poll of the control topic waits: announcements are rare, and a
# shorter wait only spends CPU; a swap is seen within this time.
POLL_MS = 500


class ControlListener:
    """Reads the control topic from the beginning and follows it."""

    def __init__(
        self, bootstrap_servers: str, topic: str, models: ModelManager
    ) -> None:
        self._topic = topic
        self._models = models
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, enable_auto_commit=False
        )

    async def start(self) -> list[ControlMessage]:
        """Connect and return every announcement made so far, in order."""
        try:
            await self._consumer.start()
            history = await read_to_end(self._consumer, self._topic)
        except KafkaError as exc:
            await self._consumer.stop()
            raise UserError(
                f"cannot reach Kafka to read {self._topic} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers"
            ) from exc

        if not self._consumer.assignment():
            logger.warning(
                "control topic %s does not exist; serving from the registry and "
                "not following announcements",
                self._topic,
            )
        logger.info(
            "control history read topic=%s announcements=%d", self._topic, len(history)
        )
        return history

    async def run(self, stop: asyncio.Event) -> None:
        """Apply each new announcement until `stop` is set."""
        if not self._consumer.assignment():
            return
        while not stop.is_set():
            for message in await poll(self._consumer, POLL_MS):
                logger.info(
                    "announcement action=%s version=%s", message.action, message.version
                )
                await self._models.apply(message)

    async def close(self) -> None:
        await self._consumer.stop()

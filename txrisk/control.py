"""The control topic: announcing model versions and reading the announcements.

Announcements are keyed by action, so a compacted control topic keeps the
latest `activate` and the latest `shadow`/`unshadow`; readers still take the
last message of each kind in log order, which is the same thing before and
after compaction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from txrisk.bundle import BundleMetadata
from txrisk.contracts import ControlMessage
from txrisk.errors import UserError

logger = logging.getLogger(__name__)

# Both shadow actions share a key: compaction keeps whichever came last.
KEYS = {"activate": b"activate", "shadow": b"shadow", "unshadow": b"shadow"}


def announcement(action: str, metadata: BundleMetadata | None) -> ControlMessage:
    return ControlMessage(
        action=action,  # type: ignore[arg-type]
        version=metadata.version if metadata else None,
        sha256=metadata.model_sha256 if metadata else None,
        created_at=metadata.created_at if metadata else None,
        announced_at=datetime.now(UTC),
    )


async def announce(bootstrap_servers: str, topic: str, message: ControlMessage) -> None:
    """Publish one announcement and wait for the broker's acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    try:
        await producer.start()
        await producer.send_and_wait(
            topic,
            value=message.model_dump_json(exclude_none=True).encode(),
            key=KEYS[message.action],
        )
    except KafkaError as exc:
        raise UserError(
            f"cannot announce on {topic} at {bootstrap_servers} ({exc}); check "
            "--bootstrap-servers"
        ) from exc
    finally:
        await producer.stop()
    logger.info(
        "announced action=%s version=%s topic=%s",
        message.action,
        message.version,
        topic,
    )


def parse(value: bytes | None) -> ControlMessage | None:
    """The announcement in a control record, or None (logged) if it is not one."""
    try:
        return ControlMessage.model_validate(orjson.loads(value or b""))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        logger.warning(
            "ignoring a malformed control message: %s", str(exc).splitlines()[0]
        )
        return None


async def read_history(bootstrap_servers: str, topic: str) -> list[ControlMessage]:
    """Every valid announcement on the topic so far, in order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False
    )
    try:
        await consumer.start()
        return await read_to_end(consumer, topic)
    except KafkaError as exc:
        raise UserError(f"cannot read {topic} at {bootstrap_servers} ({exc})") from exc
    finally:
        await consumer.stop()


async def read_to_end(consumer: AIOKafkaConsumer, topic: str) -> list[ControlMessage]:
    """Assign `topic` to a started consumer and read it from the start to its end.

    The consumer is left positioned at the end, ready to follow new messages.
    An absent topic gives an empty history and no assignment.
    """
    await consumer.topics()  # refresh metadata: the topic may be new
    partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        return []

    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    ends = await consumer.end_offsets(assigned)

    messages: list[ControlMessage] = []
    while await _behind(consumer, ends):
        messages.extend(await poll(consumer, timeout_ms=500))
    return messages


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def poll(consumer: AIOKafkaConsumer, timeout_ms: int) -> list[ControlMessage]:
    """The valid announcements among the records of one poll."""
    batch = await consumer.getmany(timeout_ms=timeout_ms)
    messages = []
    for records in batch.values():
        for record in records:
            message = parse(record.value)
            if message is not None:
                messages.append(message)
    return messages


def last_activation(history: list[ControlMessage]) -> ControlMessage | None:
    activations = [m for m in history if m.action == "activate"]
    return activations[-1] if activations else None

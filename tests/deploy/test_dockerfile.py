"""deploy/Dockerfile without a Docker engine: its shape, and its command runs here."""

from __future__ import annotations

import subprocess
import sys

from deploy_files import DOCKERFILE, REPO, dockerfile_entry, dockerfile_stages

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "cc ", "clang")


def test_multi_stage_non_root_with_a_healthcheck() -> None:
    stages = dockerfile_stages()
    builds = [s for s in stages if s[0][0] == "FROM"]
    assert len(builds) >= 2, "a build stage and a run stage"

    final = dict(builds[-1])
    assert "USER" in final and final["USER"] not in {"root", "0"}
    assert "HEALTHCHECK" in final and "EXPOSE" in final
    assert final["ENTRYPOINT"].startswith("[")  # exec form: SIGTERM reaches python
    assert any(k == "COPY" and a.startswith("--from=build") for k, a in builds[-1])

    final_text = " ".join(arguments for _, arguments in builds[-1])
    for tool in BUILD_TOOLS:
        assert tool not in final_text, f"{tool!r} in the final stage"


def test_copied_sources_exist() -> None:
    for stage in dockerfile_stages():
        for keyword, arguments in stage:
            if keyword != "COPY" or arguments.startswith("--from"):
                continue
            *sources, _ = arguments.split()
            for source in sources:
                assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text()
    for needed in ("pyproject.toml", "README.md", "txrisk/", "scorer/", "trainer/"):
        assert f"!{needed}" in ignored


def test_entry_command_runs_here() -> None:
    """The container's command, as far as it runs without Kafka: its help."""
    command = dockerfile_entry()
    assert command == ["python", "-m", "scorer", "run"]
    done = subprocess.run(
        [sys.executable, *command[1:], "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--http-port" in done.stdout


def test_dockerfile_is_where_compose_builds_it() -> None:
    assert DOCKERFILE == REPO / "deploy" / "Dockerfile"

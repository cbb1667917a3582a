"""Read the deployment files the way Docker would, for tests that check them."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    """The instructions (KEYWORD, arguments) of each stage, continuations joined."""
    stages: list[list[tuple[str, str]]] = [[]]
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return [stage for stage in stages if stage]


def _exec_form(arguments: str) -> list[str]:
    command = json.loads(arguments)
    assert isinstance(command, list), f"not exec form: {arguments}"
    return [str(part) for part in command]


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def dockerfile_entry() -> list[str]:
    """ENTRYPOINT + CMD of the final stage: what a container runs."""
    found = dict(final_stage())
    return _exec_form(found["ENTRYPOINT"]) + _exec_form(found["CMD"])


def dockerfile_healthcheck() -> list[str]:
    """The HEALTHCHECK command of the final stage."""
    arguments = dict(final_stage())["HEALTHCHECK"]
    return _exec_form(arguments[arguments.index("CMD ") + 4 :].strip())

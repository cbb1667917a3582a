"""Small HTTP helpers for tests that talk to a running scorer."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

# Loopback requests answer in milliseconds; five seconds only guards a
# starved CI machine.
REQUEST_TIMEOUT_S = 5.0
LISTENING = re.compile(r"http listening host=\S+ port=(\d+)")


def request(
    method: str, url: str, body: bytes | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str) -> tuple[int, bytes]:
    return request("GET", url)


def post(url: str, body: bytes) -> tuple[int, bytes]:
    return request("POST", url, body)


def metric_values(base: str) -> dict[str, float]:
    """Every sample of /metrics as 'name{label="v",...}' (labels sorted) -> value."""
    status, body = get(f"{base}/metrics")
    assert status == 200, body
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            pairs = sorted(sample.labels.items())
            labels = ",".join(f'{k}="{v}"' for k, v in pairs)
            name = f"{sample.name}{{{labels}}}" if labels else sample.name
            values[name] = sample.value
    return values


def wait_for_port(
    log: Path, process: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> int:
    """The port a scorer started with TXRISK_HTTP_PORT=0 logged."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text())
        if found:
            return int(found.group(1))
        assert process.poll() is None, f"scorer exited:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"the scorer never logged its port:\n{log.read_text()}")


def wait_until_ready(
    base: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> Any:
    """Poll /readyz until 200 (group joined); returns its body."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        assert process.poll() is None, "scorer exited"
        try:
            last = get(f"{base}/readyz")
        except OSError:
            # Not serving yet: the port is bound before the server starts.
            time.sleep(0.1)
            continue
        if last[0] == 200:
            return orjson.loads(last[1])
        assert last[0] == 503 and orjson.loads(last[1])["reason"], last
        time.sleep(0.1)
    raise AssertionError(f"never ready: {last}")

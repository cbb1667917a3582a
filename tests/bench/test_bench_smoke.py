"""The benchmark's quick mode, end to end, so the benchmark cannot rot.

It checks that every section runs and yields finite figures, not that targets
are met: timings on a shared test machine say nothing about the scorer.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The quick mode takes about a minute and a half on a busy two-core machine,
# most of it starting seven scorer processes; four minutes means it is stuck.
QUICK_TIMEOUT_S = 240.0


@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_benchmark_measures_every_section(registry: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scorer",
            "bench",
            "--quick",
            "--runs",
            "1",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            # The session's model: the quick mode need not train one.
            "--model-dir",
            str(registry),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    report = json.loads(out.read_text())
    figures = {figure["key"]: figure for figure in report["figures"]}
    assert {figure["section"] for figure in figures.values()} == set(range(1, 8))
    for figure in figures.values():
        median = figure["median"]
        assert median is not None and math.isfinite(median), figure
        assert figure["min"] <= median <= figure["max"], figure

    # Every target of the issue has a figure and a verdict.
    targeted = {key for key, figure in figures.items() if figure["target"]}
    assert targeted == {
        "stream.all.events_per_cpu_s",
        "stream.flagged.events_per_cpu_s",
        "latency.r1000.p99",
        "latency.r5000.p99",
        "baseline.ratio_cpu",
        "scale.ratio",
        "memory.steady_peak_mb",
        "memory.burst_ratio",
        "swap.extra_pause",
    }
    assert all(figures[key]["met"] in (True, False) for key in targeted)
    # The scorer did explain: the whole worker costs more than the model alone.
    worker, model = figures["model.worker.b100"], figures["model.predict.b100"]
    assert worker["median"] > model["median"]
    assert figures["swap.load_s"]["median"] > 0

    # The table is printed, ready to paste.
    assert "| figure | median of 1 |" in done.stdout
    assert report["machine"]["cpus"] >= 1

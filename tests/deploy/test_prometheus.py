"""The Prometheus files: promtool accepts them, every alert is unit-tested, and
a real Prometheus scrapes a running scorer with the rules loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import orjson
import pytest
import yaml
from deploy_files import REPO
from http_client import get, wait_for_port, wait_until_ready
from streams import Topics, gateway_events, read_all, send, start_scorer, stop

from txrisk.broker import EmbeddedBroker, free_port

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "txrisk.json"

INSTALL = "(`make test` installs Debian's prometheus package when run as root)"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason=f"promtool is not installed {INSTALL}"
)
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason=f"prometheus is not installed {INSTALL}"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_promtool
def test_promtool_accepts_the_config_and_rules() -> None:
    config = promtool("check", "config", CONFIG.name)
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", ALERTS.name)
    assert rules.returncode == 0, rules.stdout + rules.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", ALERT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert alerts == {
        "TxriskScorerDown",
        "TxriskConsumerLagGrowing",
        "TxriskDeadLetterRateHigh",
        "TxriskModelSwapFailed",
        "TxriskFlagRateAnomalous",
        "TxriskLatencyP99High",
    }
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == alerts and quiet == alerts


@needs_prometheus
@pytest.mark.broker
def test_real_prometheus_scrapes_a_running_scorer(
    broker: EmbeddedBroker, registry: Path, tmp_path: Path
) -> None:
    topics = Topics.fresh(broker)
    events = gateway_events(tmp_path, 300, seed=43)
    log = tmp_path / "scorer.log"
    scorer = start_scorer(broker, registry, topics, log)
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        port = wait_for_port(log, scorer)
        wait_until_ready(f"http://127.0.0.1:{port}", scorer)
        send(broker, topics.input, events)
        read_all(broker, [topics.output], len(events))

        web = f"127.0.0.1:{free_port()}"
        config = _loopback_config(tmp_path, scorer_port=port, web=web)
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--web.listen-address={web}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            ],
            stdout=(tmp_path / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        api = f"http://{web}/api/v1"
        scored = _wait_for_sample(api, "txrisk_events_scored_total", len(events))
        assert scored == len(events)
        assert _query(api, 'up{job="txrisk-scorer"}')[0]["value"][1] == "1"

        rules = orjson.loads(get(f"{api}/rules")[1])["data"]["groups"]
        loaded = {
            r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"
        }
        assert len(loaded) == 6 and all(r.startswith("Txrisk") for r in loaded)

        # Every dashboard query is valid PromQL against the scraped metrics.
        for expr in _dashboard_queries():
            _query(api, expr.replace("$__rate_interval", "1m"))
    finally:
        if prometheus is not None:
            stop(prometheus)
        assert stop(scorer) == 0, log.read_text()


def _loopback_config(tmp_path: Path, scorer_port: int, web: str) -> Path:
    """deploy/prometheus/prometheus.yml, aimed at this scorer and scraping often."""
    config = yaml.safe_load(CONFIG.read_text())
    # A second between scrapes and evaluations so the test waits seconds.
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ALERTS)]
    for job in config["scrape_configs"]:
        job.pop("scrape_timeout", None)
        scorer = job["job_name"] == "txrisk-scorer"
        target = f"127.0.0.1:{scorer_port}" if scorer else web
        job["static_configs"] = [{"targets": [target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _query(api: str, expr: str) -> list:
    status, body = get(f"{api}/query?query={urllib.parse.quote(expr)}")
    answer = orjson.loads(body)
    assert status == 200 and answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def _wait_for_sample(api: str, name: str, expected: float) -> float:
    # Prometheus starts in a second or two and scrapes every second.
    deadline = time.monotonic() + 60
    value = None
    while time.monotonic() < deadline:
        try:
            found = _query(api, name)
        except (OSError, AssertionError):
            found = []
        if found:
            value = float(found[0]["value"][1])
            if value >= expected:
                return value
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never saw {name} reach {expected}: {value}")


def _dashboard_queries() -> list[str]:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]

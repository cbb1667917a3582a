"""One set of metric names: scorer/metrics.py, its docstring, the README's
metrics table, the Grafana dashboard and the alert rules agree."""

from __future__ import annotations

import re

import orjson
import yaml
from deploy_files import REPO

from scorer import metrics

NAME = re.compile(r"\btxrisk_[a-z0-9_]*[a-z0-9]")
TABLE_ROW = re.compile(r"^\| `(txrisk_[a-z0-9_]+)` \|", re.MULTILINE)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def defined() -> dict[str, str]:
    return metrics.names()


def as_defined(name: str) -> str:
    """A name used in a query, as the module names it (histogram base names)."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and defined().get(base) == "histogram":
            return base
    return name


def readme_table() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Metrics") :]
    section = section[: section.index("\n### ", 1)]
    return TABLE_ROW.findall(section)


def test_module_defines_the_documented_metrics() -> None:
    assert len(defined()) == 15
    assert all("_" in name for name in defined())


def test_module_docstring_table_matches_the_module() -> None:
    documented = TABLE_ROW.findall(metrics.__doc__ or "")
    assert sorted(documented) == sorted(defined())


def test_readme_table_matches_the_module() -> None:
    documented = readme_table()
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted(defined())


def test_dashboard_uses_every_metric_and_only_those() -> None:
    dashboard = orjson.loads(
        (REPO / "deploy" / "grafana" / "dashboards" / "txrisk.json").read_bytes()
    )
    used = {
        as_defined(name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in NAME.findall(target["expr"])
    }
    assert used == set(defined())


def test_alert_rules_use_only_defined_metrics() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    used = {
        as_defined(name)
        for group in rules["groups"]
        for rule in group["rules"]
        for name in NAME.findall(rule["expr"])
    }
    assert used and used <= set(defined()), used - set(defined())


def test_every_metric_is_prefixed_and_has_a_unit_or_kind_suffix() -> None:
    suffixes = ("_total", "_seconds", "_events", "_messages", "_ratio", "_info")
    for name in defined():
        assert name.startswith("txrisk_")
        assert name.endswith(suffixes), name

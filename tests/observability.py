"""The shipped dashboard and alert rules (docker/observability/), as the tests read them."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests import PROJECT_ROOT

OBSERVABILITY = PROJECT_ROOT / "docker" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "merlin.json"
RULES = OBSERVABILITY / "prometheus" / "alerts.yaml"
RULE_TESTS = OBSERVABILITY / "prometheus" / "alerts.test.yaml"
SCRAPE_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
# What the dashboard's own variables stand for when every value is chosen ("All").
ALL = ".*"
# Grafana's interval variables: the window a query is evaluated over.
INTERVALS = ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}", "$__range")


def debian_tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; fails the test when Debian's package is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make test` installs it (apt-get install prometheus)")
    return path


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str  # with the dashboard's variables substituted


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel but the rows, those inside collapsed rows included."""
    found = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries(window: str) -> list[PanelQuery]:
    """Every panel's Prometheus queries with the variables substituted: ``window`` for the intervals,
    every value for the dashboard's own variables."""
    variables = [v["name"] for v in dashboard()["templating"]["list"] if v["type"] != "datasource"]
    queries = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for interval in INTERVALS:
                expr = expr.replace(interval, window)
            for name in variables:
                expr = re.sub(rf"\$\{{{name}(:[a-z]+)?\}}|\${name}\b", ALL, expr)
            queries.append(PanelQuery(panel["title"], target["refId"], expr))
    return queries


def rules() -> list[dict[str, Any]]:
    """The alerting rules of alerts.yaml, every group's."""
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as -."""
    found = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found

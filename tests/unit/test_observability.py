"""The dashboard, the alert rules and the scrape config, checked by Prometheus' own promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.observability import (
    OPERATIONS,
    RULE_TESTS,
    RULES,
    SCRAPE_CONFIG,
    anchors,
    dashboard,
    debian_tool,
    panel_queries,
    panels,
    rules,
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [debian_tool("promtool"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=RULES.parent)


def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    tested = promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    alerts = {rule["alert"] for rule in rules()}
    assert {case["alertname"] for case in cases if case.get("exp_alerts")} == alerts
    assert {case["alertname"] for case in cases if not case.get("exp_alerts")} == alerts


def test_every_alert_says_what_happened_and_links_its_runbook() -> None:
    documented = anchors(OPERATIONS.read_text())
    for rule in rules():
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in documented, f"docs/operations.md has no heading for {rule['alert']}"


def test_promtool_accepts_the_scrape_config_and_its_rules() -> None:
    checked = promtool("check", "config", SCRAPE_CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"merlin-write-api", "merlin-read-api", "merlin-admin-api", "merlin-forwarder"}
    selected = {job for rule in rules() for job in re.findall(r'job="(merlin-[a-z-]+)"', rule["expr"])}
    assert selected <= jobs


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression (it has no parser of its own to call)."""
    queries = panel_queries("5m")
    recorded = [{"record": f"panel:{n}", "expr": query.expr} for n, query in enumerate(queries)]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": recorded}]}))
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not [query for query in queries if "$" in query.expr.replace("$1", "")], "a variable left"


def test_the_dashboard_picks_its_data_source_and_every_panel_uses_it() -> None:
    board = dashboard()
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    uid = f"${{{variable['name']}}}"
    for panel in panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"]["uid"] == uid for target in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_the_dashboard_shows_what_on_call_needs() -> None:
    shown = " ".join(query.expr for query in panel_queries("5m"))
    for metric in (
        "merlin_http_requests_total",
        "merlin_http_request_seconds_bucket",
        "merlin_write_append_seconds_bucket",
        "merlin_projection_events_total",
        "merlin_forwarder_lag_records",
        "merlin_deliveries_total",
        "merlin_delivery_seconds_bucket",
        "merlin_endpoint_oldest_undelivered_age_seconds",
        "merlin_delivery_blocked_rooms",
        "merlin_endpoint_disabled",
        "merlin_dead_letters_total",
        "merlin_settings_subscription_up",
        "merlin_forwarder_rebalances_total",
        "merlin_forwarder_flow_restarts_total",
        "merlin_forwarder_stage_restarts_total",
        "merlin_kafka_broker_rtt_seconds",
        "merlin_kafka_producer_queue_messages",
        "merlin_kafka_consumer_fetch_queue_messages",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "merlin_http_unavailable_total",  # the write API's 503s, by problem
    ):
        assert re.search(rf"\b{metric}\b", shown), metric

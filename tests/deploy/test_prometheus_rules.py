"""deploy/prometheus/alerts.yml: valid PromQL, and only metrics the service really exports."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from service.db.session import Database

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bcmb_[a-z_]+\b")


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _exported_samples(tmp_path: Path) -> set[str]:
    """Every sample name a scrape of the service shows (counters with _total, histogram parts)."""
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        text = generate_latest(metrics.REGISTRY) + generate_latest(metrics.database_registry(db))
    finally:
        db.dispose()
    names: set[str] = set()
    for family in text_string_to_metric_families(text.decode()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_every_rule_is_complete_and_parses() -> None:
    rules = _rules()
    assert len(rules) >= 5
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        promql_parser.parse(rule["expr"])  # raises ValueError on a syntax error
        if rule["for"] not in ("0s", "0m"):  # zero is valid in Prometheus, not in the parser
            promql_parser.parse_duration(rule["for"])


def test_rules_name_only_metrics_the_service_exports(tmp_path: Path) -> None:
    exported = _exported_samples(tmp_path)
    used = {name for rule in _rules() for name in METRIC.findall(rule["expr"])}
    assert used, "the rules name no cmb_ metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # the delivery alerts cover the per-destination gauges an operator acts on
    assert {"cmb_destination_oldest_pending_seconds", "cmb_destination_parked"} <= used

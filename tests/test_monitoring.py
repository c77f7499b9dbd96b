"""The monitoring files in docker/monitoring/ agree with what the code emits: every metric the
pipeline sends becomes a Prometheus series through the statsd_exporter mapping (none falls
through), every series the alert rules and the Grafana dashboard use is one of those, and the
compose profile mounts them."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import yaml

from cdr_airflow.watch import SILENCE_GAUGE, SILENT_COUNT
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestRequest, copy_into_landing, run_ingest
from pipeline.health import health_gauges, ingest_metrics, reported_at
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.test_docker import COMPOSE, ENV_EXAMPLE

MONITORING = ROOT / "docker" / "monitoring"
PREFIX = "airflow."


def _mappings() -> list[dict]:  # type: ignore[type-arg]
    return list(yaml.safe_load((MONITORING / "statsd-mapping.yml").read_text())["mappings"])


def prometheus_series(statsd_name: str) -> tuple[str, dict[str, str]] | None:
    """What statsd_exporter makes of a metric: (series, labels), or None when dropped. A
    metric no rule matches raises (the exporter would pass it on unlabelled)."""
    for rule in _mappings():
        found = re.match(rule["match"], statsd_name)
        if not found:
            continue
        if rule.get("action") == "drop":
            return None

        def fill(text: str, found: re.Match[str] = found) -> str:
            return re.sub(r"\$\{?(\d+)\}?", lambda g: found.group(int(g.group(1))), text)

        labels = {k: fill(str(v)) for k, v in (rule.get("labels") or {}).items()}
        return fill(rule["name"]), labels
    raise AssertionError(f"no mapping for {statsd_name}")


def emitted_names(res: Resources, tmp: Path) -> set[str]:
    """Every metric name the pipeline sends for a real ingest and the health gauges."""
    g = generate("canonical_csv", tmp / "a.csv", 300, seed=4, months=2,
                 start=dt.date(2025, 4, 1), bad_share=0.05)  # fmt: skip
    key = copy_into_landing(res.store, g.path, "pbx-1")
    report = run_ingest(res, IngestRequest(dt.date(2025, 6, 15)), key).to_dict()
    m = ingest_metrics(report)
    names = set(m.counters) | set(m.gauges) | set(m.timings_ms)
    names |= set(health_gauges(res, dt.datetime(2025, 6, 15, tzinfo=dt.UTC)))
    names |= {SILENCE_GAUGE.format(source="pbx-1"), SILENT_COUNT, reported_at("sources")}
    return {PREFIX + n for n in names}


def test_every_metric_the_pipeline_sends_becomes_a_labelled_series(res: Resources, tmp_path: Path) -> None:  # fmt: skip
    names = emitted_names(res, tmp_path)
    assert any(".quarantined." in n for n in names)  # a reason was counted
    series = {n: prometheus_series(n) for n in sorted(names)}
    kept = {n: s for n, s in series.items() if s is not None}
    dropped = set(series) - set(kept)
    # only the totals are dropped: each is the sum of its per-source series
    assert dropped and all(n.startswith(PREFIX + "cdr.ingest.") for n in dropped)
    assert not any(".source." in n for n in dropped)
    assert kept[PREFIX + "cdr.source.pbx-1.records"] == ("cdr_rows_total", {"source": "pbx-1", "tier": "records"})  # fmt: skip
    reason = next(n for n in kept if n.startswith(PREFIX + "cdr.source.pbx-1.quarantined."))
    assert kept[reason][0] == "cdr_quarantined_rows_total" and kept[reason][1]["reason"]
    assert kept[PREFIX + "cdr.requests.overdue"] == ("cdr_requests_by_deadline", {"bucket": "overdue"})  # fmt: skip
    assert kept[PREFIX + "cdr.retention.days_overdue"] == ("cdr_retention_days_overdue", {})
    assert kept[PREFIX + "cdr.source.pbx-1.lag"][0] == "cdr_ingest_lag_seconds"
    assert kept[PREFIX + "cdr.watch.sources.reported_at"] == ("cdr_watch_reported_at", {"watch": "sources"})  # fmt: skip


def _used_series(text: str) -> set[str]:
    found = set(re.findall(r"\b(cdr_[a-z0-9_]+)", text))
    return {re.sub(r"_(bucket|sum|count)$", "", s) for s in found}


def test_alert_rules_and_the_dashboard_use_only_series_that_exist(res: Resources, tmp_path: Path) -> None:  # fmt: skip
    produced = {s[0] for n in emitted_names(res, tmp_path) if (s := prometheus_series(n))}
    rules = yaml.safe_load((MONITORING / "alert-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 6 and all(r.get("labels", {}).get("severity") for g in rules["groups"] for r in g["rules"])  # fmt: skip
    dashboard = json.loads(
        (MONITORING / "grafana" / "dashboards" / "cdr-pipeline.json").read_text()
    )
    targets = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = _used_series("\n".join(exprs + targets))
    assert used and used <= produced, used - produced
    # every series the pipeline makes is on the dashboard
    assert produced <= _used_series("\n".join(targets)), produced - _used_series("\n".join(targets))
    # a misspelt series is seen
    assert not _used_series("cdr_retention_days_overdu > 1") <= produced


def test_the_monitoring_profile_mounts_the_files_it_names() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE),
         "--profile", "monitoring", "config"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    services = yaml.safe_load(out.stdout)["services"]
    for name in ("statsd-exporter", "prometheus", "grafana"):
        assert services[name].get("healthcheck", {}).get("test"), name
        for volume in services[name].get("volumes", []):
            source = Path(volume["source"] if isinstance(volume, dict) else volume.split(":")[0])
            assert source.exists(), (name, source)
    env = services["airflow-worker"]["environment"]
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    assert env["AIRFLOW__METRICS__STATSD_PORT"] == "9125"


def test_an_env_without_the_monitoring_secret_still_starts_the_stack(tmp_path: Path) -> None:
    """Grafana's password is required by Grafana alone: a deployment's older .env, without it,
    still resolves, and Grafana refuses to start without it rather than with a default."""
    env = tmp_path / ".env"
    env.write_text("".join(line for line in ENV_EXAMPLE.read_text().splitlines(keepends=True)
                           if "GRAFANA" not in line))  # fmt: skip
    subprocess.run(["docker-compose", "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"], check=True)  # fmt: skip
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(env), "--profile", "monitoring", "config"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    grafana = yaml.safe_load(out.stdout)["services"]["grafana"]
    assert "test -n" in " ".join(grafana["entrypoint"]) and "exit 1" in " ".join(grafana["entrypoint"])  # fmt: skip

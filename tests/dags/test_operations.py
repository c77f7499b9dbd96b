"""Operations: every DAG alerts on failure through the notifier (log, webhook or e-mail), and the
retention watch alerts when retention has not succeeded for two days. (Ingest metrics reach
StatsD from real Celery workers: tests/distributed.)"""

from __future__ import annotations

import datetime as dt
import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipeline.core.alerts import RETENTION_SUCCESS, Alert, send
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from tests.conftest import ROOT
from tests.helpers import load_dag


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:  # type: ignore[type-arg]
    """Alerts go to a webhook on 127.0.0.1 (CDR_NOTIFY=webhook); the JSON bodies it received."""
    received: list[dict] = []  # type: ignore[type-arg]

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CDR_NOTIFY", "webhook")
    monkeypatch.setenv("CDR_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    try:
        yield received
    finally:
        server.shutdown()


def test_every_task_of_every_dag_alerts_on_failure() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dags = bag.dags
    assert {"cdr_ingest", "cdr_retention", "cdr_retention_watch", "cdr_le_export"} <= set(dags)
    for dag_id, dag in dags.items():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            names = [type(c).__name__ for c in callbacks]
            assert "CdrFailureNotifier" in names, (dag_id, task.task_id)


@pytest.mark.airflow
def test_a_failed_run_posts_an_alert_without_identifiers(
    airflow_db: None,
    local_env: dict[str, str],
    webhook: list[dict],  # type: ignore[type-arg]
) -> None:
    received = webhook
    run = load_dag("cdr_legal_hold").test(run_conf={"action": "release", "case": "X-9"})
    assert run.state == "failed"
    assert len(received) == 1
    alert = received[0]
    assert alert["title"] == "cdr_legal_hold failed at describe_request"
    assert "no hold for case X-9" in alert["detail"] and alert["facts"]["run_id"] == run.run_id


@pytest.mark.airflow
def test_the_retention_watch_alerts_until_retention_succeeds(
    airflow_db: None,
    local_env: dict[str, str],
    webhook: list[dict],  # type: ignore[type-arg]
) -> None:
    received = webhook
    watch = load_dag("cdr_retention_watch")
    assert watch.test().state == "failed"  # never succeeded
    assert "retention has not succeeded for two days" in received[-1]["detail"]

    res = Resources.from_settings(Settings.from_env(local_env))
    three_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=1)
    res.store.put_bytes(
        RETENTION_SUCCESS,
        json.dumps({"as_of": "x", "finished_at": three_days_ago.isoformat()}).encode(),
    )
    assert watch.test().state == "failed"  # stale
    assert three_days_ago.isoformat()[:16] in received[-1]["detail"]

    count = len(received)
    assert load_dag("cdr_retention").test().state == "success"
    assert watch.test().state == "success"
    assert len(received) == count


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP to accept one message and keep it."""

    messages: list[str] = []  # noqa: RUF012 (collected across connections)

    def handle(self) -> None:
        self.wfile.write(b"220 test\r\n")
        data, in_data = [], False
        for raw in self.rfile:
            line = raw.decode()
            if in_data:
                if line == ".\r\n":
                    in_data = False
                    _Smtp.messages.append("".join(data))
                    self.wfile.write(b"250 ok\r\n")
                else:
                    data.append(line)
                continue
            verb = line[:4].upper()
            if verb == "DATA":
                in_data = True
                self.wfile.write(b"354 go\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            elif verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 test\r\n")
            else:
                self.wfile.write(b"250 ok\r\n")


def test_alerts_by_email_and_a_bad_channel_is_refused() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"CDR_NOTIFY": "email", "CDR_ALERT_EMAIL": "oncall@example.com",
               "CDR_SMTP_HOST": f"127.0.0.1:{server.server_address[1]}"}  # fmt: skip
        assert send(Alert("cdr_ingest failed", "IngestError: f.csv", facts={"run": "r1"}), env)
        assert "Subject: [cdr-pipeline] cdr_ingest failed" in _Smtp.messages[-1]
        assert "oncall@example.com" in _Smtp.messages[-1]
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="CDR_NOTIFY='pager'"):
        send(Alert("x", "y"), {"CDR_NOTIFY": "pager"})
    with pytest.raises(ValueError, match="needs CDR_ALERT_WEBHOOK"):
        send(Alert("x", "y"), {"CDR_NOTIFY": "webhook"})

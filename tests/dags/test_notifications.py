"""Inside Airflow, alerts travel through the providers: e-mail through the smtp provider's
`SmtpNotifier` (STARTTLS and credentials from an Airflow connection), the webhook through the http
provider's `HttpHook`. The servers are real ones on 127.0.0.1; the connections are AIRFLOW_CONN_*
JSON, as a deployment defines them."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests import mailserver
from tests.helpers import load_dag


@pytest.fixture
def http_alerts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict]]]:  # type: ignore[type-arg]
    """A webhook on 127.0.0.1 behind the `cdr_webhook` http connection: (path, JSON) received."""
    received: list[tuple[str, dict]] = []  # type: ignore[type-arg]

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/cdr"
    monkeypatch.setenv("AIRFLOW_CONN_CDR_WEBHOOK", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("CDR_NOTIFY", "webhook")
    monkeypatch.delenv("CDR_ALERT_WEBHOOK", raising=False)  # the connection alone says where
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def _body(text: str) -> str:
    message = email.message_from_string(text)
    parts = message.walk() if message.is_multipart() else [message]
    return (
        "".join(p.get_payload(decode=True).decode() for p in parts if not p.is_multipart())
        + f"\nSubject: {message['Subject']}\nTo: {message['To']}\nFrom: {message['From']}"
    )


@pytest.mark.airflow
def test_an_alert_e_mail_goes_through_the_smtp_connection_over_tls(
    airflow_db: None, local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    box = mailserver.start(login="alerts", password="smtp-secret")
    try:
        connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": box.port,
                      "login": "alerts", "password": "smtp-secret",
                      "extra": {"disable_ssl": True, "ssl_context": "none", "timeout": 5,
                                "retry_limit": 0, "from_email": "cdr@example.org"}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_CDR_SMTP", json.dumps(connection))
        monkeypatch.setenv("CDR_NOTIFY", "email")
        monkeypatch.setenv("CDR_ALERT_EMAIL", "oncall@example.com")
        monkeypatch.delenv("CDR_ALERT_FROM", raising=False)
        monkeypatch.setenv("CDR_SMTP_HOST", "127.0.0.1:1")  # the CLI's way would fail: unused

        assert load_dag("cdr_retention_watch").test().state == "failed"  # never succeeded
    finally:
        box.stop()
    assert len(box.messages) == 1
    sent = box.messages[0]
    assert sent.tls and sent.user == "alerts"  # STARTTLS, then the connection's credentials
    text = _body(sent.text)
    assert "Subject: [cdr-pipeline] cdr_retention_watch failed" in text
    assert "To: oncall@example.com" in text and "From: cdr@example.org" in text
    assert "retention has not succeeded for two days" in text


@pytest.mark.airflow
def test_an_alert_is_posted_through_the_http_connection(
    airflow_db: None,
    local_env: dict[str, str],
    http_alerts: list[tuple[str, dict]],  # type: ignore[type-arg]
) -> None:
    assert load_dag("cdr_retention_watch").test().state == "failed"
    assert len(http_alerts) == 1
    path, alert = http_alerts[0]
    assert path == "/hooks/cdr"
    assert alert["title"] == "cdr_retention_watch failed at check_retention"
    assert "retention has not succeeded for two days" in alert["detail"]

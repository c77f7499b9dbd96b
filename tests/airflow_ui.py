"""`make ui` started as a user starts it (`python -m cdr_airflow.ui`) on a free port, for tests
that need the whole of Airflow: api-server, scheduler, dag-processor, triggerer."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

from tests.conftest import ROOT, free_port

READY_SECONDS = 300


class UI:
    """A running `python -m cdr_airflow.ui`: its URL, users' passwords and processes."""

    def __init__(self, proc: subprocess.Popen[str], port: int, home: Path) -> None:
        self.proc, self.port, self.home = proc, port, home
        self.url = f"http://127.0.0.1:{port}"
        self.passwords: dict[str, str] = {}
        self.pids: set[int] = set()

    def processes(self) -> set[int]:
        """The UI and every process below it, and every process group it leads."""
        found = {self.proc.pid}
        with contextlib.suppress(psutil.NoSuchProcess):
            found |= {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        return found


@contextlib.contextmanager
def running_ui(base: Path, settings: Mapping[str, str]) -> Iterator[UI]:
    """The UI on its own Airflow home under `base` (nothing of the tests' own Airflow: home,
    unit-test mode, database) with the CDR settings given; they are the test process's own
    too while it runs (its checks read the UI's store). Stopped, with all it started, after."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(base / "airflow"),
        "CDR_HOME": str(base / "cdr"),
        **settings,
    }
    env.pop("CDR_APPROVERS", None)  # the UI's own: the approver
    base.mkdir(parents=True, exist_ok=True)
    log = open(base / "ui.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdr_airflow.ui", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    running = UI(proc, port, base / "airflow")
    ours = {k: v for k, v in env.items() if k.startswith("CDR_")}
    before = {k: os.environ.get(k) for k in ours}
    try:
        lines = _until_ready(proc)
        assert lines and lines[-1].strip() == "ready", "".join(lines) + (base / "ui.out").read_text()  # fmt: skip
        for line in lines:
            if m := re.match(r"\s+(officer|approver|admin)\s+password (\S+)", line):
                running.passwords[m.group(1)] = m.group(2)
        running.pids = running.processes()
        os.environ.update(ours)
        yield running
    finally:  # a UI that never got ready is stopped too, with everything it started
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _until_ready(proc: subprocess.Popen[str]) -> list[str]:
    """The UI's output up to its `ready` line, read on a thread against a deadline (a UI that
    hangs before printing anything does not hang the test)."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(READY_SECONDS)
    return list(lines)


def api(ui: UI, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
    """A call to the UI's REST API as the admin (what the UI's pages read)."""
    login = urllib.request.Request(
        f"{ui.url}/auth/token",
        data=json.dumps({"username": "admin", "password": ui.passwords["admin"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(login, timeout=60) as answer:
        token = json.loads(answer.read())["access_token"]
    request = urllib.request.Request(
        f"{ui.url}/api/v2{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        found: dict = json.loads(answer.read() or b"{}")  # type: ignore[type-arg]
        return found

"""An Airflow Celery deployment on 127.0.0.1 for tests and benchmarks: a throwaway PostgreSQL
cluster, Redis, the api-server, scheduler, dag-processor and N Celery workers, started in order,
checked healthy, and stopped by PID in order (workers first) with nothing left running.

Needs Debian's postgresql and redis-server (`make system`) and root (the cluster runs as the
postgres user). A StatsD listener collects the metrics the processes send.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
#: how long one call to the api-server may take: a busy 2-core machine answers slowly, not never
CALL_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_version() -> str:
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1].name


class Stack:
    """The processes of one Airflow Celery deployment, started and stopped in order."""

    def __init__(
        self, base: Path, cdr_env: dict[str, str], statsd_port: int, workers: int = 2
    ) -> None:
        self.base, self.cdr_env = base, cdr_env
        self.workers = [f"w{i}" for i in range(1, workers + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api = free_port()
        self.pg_port, self.redis_port = free_port(), free_port()
        self.cluster = f"cdr{os.getpid()}"
        self.version = _pg_version()
        db = f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{self.pg_port}/airflow"
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = keep | cdr_env | {
            "AIRFLOW_HOME": str(base / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://airflow:airflow@127.0.0.1:{self.pg_port}/airflow",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        }  # fmt: skip

    def _run(self, *cmd: str, user: str | None = None) -> None:
        full = ["su", user, "-c", " ".join(cmd)] if user else list(cmd)
        done = subprocess.run(full, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(full)} failed: {done.stdout}{done.stderr}")

    def _start(self, name: str, *cmd: str) -> None:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the process)
        self.procs[name] = subprocess.Popen(
            list(cmd), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> None:
        data = self.base / "pg"
        data.mkdir()
        os.chmod(self.base, 0o755)
        subprocess.run(["chown", "postgres:postgres", str(data)], check=True)
        self._run("pg_createcluster", self.version, self.cluster, "-d", str(data),
                  "-p", str(self.pg_port))  # fmt: skip
        self._run("pg_ctlcluster", self.version, self.cluster, "start", "-o",
                  "-c listen_addresses=127.0.0.1")  # fmt: skip
        psql = f"psql -p {self.pg_port} -c"
        self._run(f"{psql} \"CREATE USER airflow PASSWORD 'airflow'\"", user="postgres")
        self._run(f'{psql} "CREATE DATABASE airflow OWNER airflow"', user="postgres")
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port",
                        str(self.redis_port), "--save", "", "--pidfile",
                        str(self.base / "redis.pid")], check=True)  # fmt: skip
        airflow = str(Path(sys.executable).parent / "airflow")
        for setup in (["db", "migrate"], ["pools", "set", "cdr_store", "8", "S3 and KMS calls"]):
            subprocess.run([airflow, *setup], env=self.env, check=True, capture_output=True,
                           timeout=300)  # fmt: skip
        self._start("api-server", airflow, "api-server", "--host", "127.0.0.1", "--port",
                    str(self.api), "--workers", "1")  # fmt: skip
        self._start("scheduler", airflow, "scheduler")
        self._start("dag-processor", airflow, "dag-processor")
        for worker in self.workers:
            self._start(worker, airflow, "celery", "worker", "--concurrency", "1",
                        "--celery-hostname", f"{worker}@%h", "--skip-serve-logs")  # fmt: skip
        self._wait(self._healthy, 180, "the stack to be healthy")

    def _healthy(self) -> bool:
        try:
            health = self.call("GET", "/api/v2/monitor/health")
        except (OSError, urllib.error.URLError):
            return False
        ready = all(b"ready." in (self.base / f"{w}.log").read_bytes() for w in self.workers)
        return health.get("scheduler", {}).get("status") == "healthy" and ready

    def _wait(self, check: Any, seconds: float, what: str) -> None:
        """Poll `check` until it holds, against a deadline of `seconds`: an api-server slow to
        answer on a busy machine (a timeout, a refused or reset connection) is asked again, not
        a failure; a component that exits is one at once."""
        deadline = time.monotonic() + seconds
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.base / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{tail}")
            try:
                if check():
                    return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # a wrong request stays wrong: fail now, not at the deadline
                    raise
                last = exc
            except (OSError, urllib.error.URLError) as exc:  # TimeoutError is an OSError
                last = exc
            time.sleep(1)
        raise TimeoutError(f"waited {seconds} s for {what} (last error: {last!r})")

    def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=CALL_SECONDS) as response:
            result: dict[str, Any] = json.loads(response.read() or b"{}")
            return result

    def stop(self) -> list[str]:
        """Stop everything in order, by PID; what is still running afterwards (none)."""
        for name in (*self.workers, "scheduler", "dag-processor", "api-server"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), "shutdown",
                        "nosave"], capture_output=True)  # fmt: skip
        subprocess.run(["pg_ctlcluster", self.version, self.cluster, "stop"], capture_output=True)
        subprocess.run(["pg_dropcluster", self.version, self.cluster], capture_output=True)
        left = [name for name, p in self.procs.items() if p.poll() is None]
        for name in (*self.workers, "scheduler", "dag-processor", "api-server"):
            try:  # the whole session (process group) is gone, not only its leader
                os.killpg(self.procs[name].pid, 0)
                left.append(f"{name} (group)")
            except (ProcessLookupError, KeyError):
                pass
        return left


class StatsD:
    """A UDP listener drained by a thread from the start (the kernel's buffer would overflow
    with Airflow's own metrics during a run)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(65535).decode(errors="replace"))
            except TimeoutError:
                continue

    def text(self) -> str:
        return "\n".join(self.packets)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def run_dag(
    stack: Stack, dag_id: str, landing_empty: Any, timeout: float = 900
) -> list[dict[str, Any]]:
    """Unpause and trigger `dag_id`, wait until every run has ended and `landing_empty()`;
    the runs."""
    stack._wait(lambda: _dag_known(stack, dag_id), 120, f"{dag_id} to be parsed")
    stack._wait(lambda: stack.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}), 300, f"{dag_id} unpaused")  # fmt: skip
    stack.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
    runs: list[dict[str, Any]] = []

    def finished() -> bool:
        nonlocal runs
        runs = stack.call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        ended = bool(runs) and all(r["state"] in ("success", "failed") for r in runs)
        return ended and landing_empty()

    stack._wait(finished, timeout, f"{dag_id} to finish")
    return runs


def _dag_known(stack: Stack, dag_id: str) -> bool:
    try:
        stack.call("GET", f"/api/v2/dags/{dag_id}")
        return True
    except urllib.error.HTTPError:
        return False

"""A real distributed run: PostgreSQL, Redis, the Airflow api-server, scheduler, dag-processor
and two Celery workers on 127.0.0.1, with moto's S3 as the store. CDR files dropped in landing/
are ingested by `cdr_ingest` with mapped tasks spread over both workers, and silver and gold
equal what one process makes of the same files. Everything is stopped by PID afterwards."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from cryptography.fernet import Fernet

from pipeline.config import Settings
from pipeline.ingest import Resources, copy_into_landing, ingest_file
from pipeline.synth import generate
from tests.conftest import ROOT, free_port
from tests.helpers import read_tier

pytestmark = [pytest.mark.distributed, pytest.mark.s3]
FILES = 6


def _pg_version() -> str:
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1].name


class Stack:
    """The processes of one Airflow Celery deployment, started and stopped in order."""

    def __init__(self, base: Path, cdr_env: dict[str, str], statsd_port: int) -> None:
        self.base, self.cdr_env = base, cdr_env
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
        for worker in ("w1", "w2"):
            self._start(worker, airflow, "celery", "worker", "--concurrency", "1",
                        "--celery-hostname", f"{worker}@%h", "--skip-serve-logs")  # fmt: skip
        self._wait(self._healthy, 180, "the stack to be healthy")

    def _healthy(self) -> bool:
        try:
            health = self.call("GET", "/api/v2/monitor/health")
        except (OSError, urllib.error.URLError):
            return False
        ready = all(b"ready." in (self.base / f"{w}.log").read_bytes() for w in ("w1", "w2"))
        return health.get("scheduler", {}).get("status") == "healthy" and ready

    def _wait(self, check: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.base / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{tail}")
            if check():
                return
            time.sleep(1)
        raise TimeoutError(f"waited {seconds} s for {what}")

    def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read() or b"{}")
            return result

    def stop(self) -> list[str]:
        """Stop everything in order, by PID; what is still running afterwards (none)."""
        for name in ("w1", "w2", "scheduler", "dag-processor", "api-server"):
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
        for name in ("w1", "w2", "scheduler", "dag-processor", "api-server"):
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


@pytest.fixture
def statsd() -> Iterator[StatsD]:
    listener = StatsD()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def stack(
    tmp_path: Path, s3_buckets: tuple[str, str], moto_endpoint: str, statsd: StatsD
) -> Iterator[Stack]:
    data, bronze = s3_buckets
    base = Path(tempfile.mkdtemp(prefix="cdr-stack-"))
    cdr_env = {
        "CDR_STORE": f"s3://{data}/cdr",
        "CDR_BRONZE_STORE": f"s3://{bronze}",
        "CDR_S3_ENDPOINT_URL": moto_endpoint,
        "CDR_KEYRING": str(base / "keyring"),
        "CDR_DATA_DOCS": str(base / "docs"),
        "CDR_HOME": str(base / "var"),
        "CDR_DEFAULT_REGION": "PK",
        "CDR_BATCH_ROWS": "2000",
    }
    s = Stack(base, cdr_env, statsd.port)
    try:
        s.start()
        yield s
    finally:
        left = s.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert left == [], f"still running: {left}"


def _runs_done(stack: Stack) -> list[dict[str, Any]] | None:
    runs = stack.call("GET", "/api/v2/dags/cdr_ingest/dagRuns")["dag_runs"]
    if runs and all(r["state"] in ("success", "failed") for r in runs):
        return list(runs)
    return None


def test_two_celery_workers_share_the_mapped_ingest(
    stack: Stack, statsd: StatsD, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = Resources.from_settings(Settings.from_env(stack.cdr_env))
    today = dt.datetime.now(dt.UTC).date()
    start = (today.replace(day=1) - dt.timedelta(days=40)).replace(day=1)
    paths = []
    for i in range(FILES):
        g = generate("canonical_csv", tmp_path / f"cdr-{i}.csv", 20_000, seed=50 + i,
                     start=start, months=2)  # fmt: skip
        copy_into_landing(res.store, g.path, "canonical_csv")
        paths.append(g.path)

    stack._wait(lambda: _dag_known(stack), 120, "cdr_ingest to be parsed")
    stack.call("PATCH", "/api/v2/dags/cdr_ingest", {"is_paused": False})
    stack.call("POST", "/api/v2/dags/cdr_ingest/dagRuns", {"logical_date": None})
    runs: list[dict[str, Any]] = []

    def finished() -> bool:
        nonlocal runs
        runs = _runs_done(stack) or []
        return bool(runs) and not list(res.store.list("landing/"))

    stack._wait(finished, 600, "cdr_ingest to finish")
    assert {r["state"] for r in runs} == {"success"}
    succeeded = 0
    for run in runs:
        tis = stack.call(
            "GET", f"/api/v2/dags/cdr_ingest/dagRuns/{run['dag_run_id']}/taskInstances"
        )["task_instances"]
        succeeded += sum(ti["task_id"] == "ingest" and ti["state"] == "success" for ti in tis)
    # Which worker ran which mapped task: each worker logs the workloads Celery gave it.
    by_worker = {
        worker: re.findall(
            r"Executing workload in Celery: .*?task_id=ingest/map_index=(\d+)/",
            (stack.base / f"{worker}.log").read_text(errors="replace"),
        )
        for worker in ("w1", "w2")
    }
    with capsys.disabled():
        print(f"\nmapped ingest tasks (map_index) per Celery worker: {by_worker}")
    assert succeeded == FILES == sum(len(v) for v in by_worker.values())
    assert all(by_worker.values()), by_worker  # both workers took mapped tasks
    # Each file's counts reached StatsD from the workers, as Airflow metrics.
    metrics = statsd.text()
    assert metrics.count("airflow.cdr.ingest.files.ingested:1|c") == FILES, metrics[:3000]
    assert "airflow.cdr.ingest.records:20000|c" in metrics

    # One process, the same files, the same keyring: the same silver and gold.
    single = Resources.from_settings(
        Settings.from_env(stack.cdr_env | {"CDR_STORE": str(tmp_path / "single"),
                                           "CDR_BRONZE_STORE": str(tmp_path / "single")})
    )  # fmt: skip
    for path in paths:
        ingest_file(single, path, source="canonical_csv", default_region="PK", as_of=today)
    for tier in ("silver/", "gold/"):
        order = ["source_sha256", "leaf_index"]
        distributed = read_tier(res.store, tier).sort(order)
        alone = read_tier(single.store, tier).sort(order)
        assert len(distributed) > 0
        assert distributed.equals(alone), tier
    assert len(read_tier(res.store, "gold/")) == pl.Series(
        [len(p.read_text().splitlines()) - 1 for p in paths]
    ).sum() - len(read_tier(res.store, "quarantine/rows/"))


def _dag_known(stack: Stack) -> bool:
    try:
        stack.call("GET", "/api/v2/dags/cdr_ingest")
        return True
    except urllib.error.HTTPError:
        return False

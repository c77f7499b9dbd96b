"""The production compose file: valid for docker-compose, and every setting the code reads is
set for every service that runs the project's code (checked on the resolved configuration)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
# Read by the code but deliberately not set by the deployment, and why.
NOT_DEPLOYED = {
    "CDR_ACTOR": "a shell's name for who acts; a task names the person behind its run itself",
    "CDR_EXPECTATIONS": "a development override of the suites' folder; the image ships them",
    "CDR_UI_PORT": "the port of `make ui` on a workstation; production's UI is the api-server's",
}
AIRFLOW = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": r"^postgresql\+psycopg2://",
    "AIRFLOW__CELERY__BROKER_URL": r"^redis://",
    "AIRFLOW__CELERY__RESULT_BACKEND": r"^db\+postgresql://",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": r"^http://airflow-apiserver:8080/execution/$",
    "AIRFLOW__CORE__FERNET_KEY": r".",
    "AIRFLOW__API_AUTH__JWT_SECRET": r".",
}


def settings_read_by_code() -> set[str]:
    names: set[str] = set()
    code = ("pipeline", "cdr_airflow")
    for path in [*(p for c in code for p in (ROOT / c).rglob("*.py")), *(ROOT / "dags").glob("*.py")]:  # fmt: skip
        names |= set(re.findall(r"\"(CDR_[A-Z0-9_]+)\"", path.read_text()))
    return names - set(NOT_DEPLOYED)


def resolved(compose: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["docker-compose", "-f", str(compose), "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    config: dict = yaml.safe_load(out.stdout)  # type: ignore[type-arg]
    return config


def compose_problems(compose: Path) -> list[str]:
    """What a service running the project's code lacks, one line per service and setting."""
    problems = []
    services = resolved(compose)["services"]
    ours = {n: s for n, s in services.items() if "cdr-pipeline" in str(s.get("image", ""))}
    if not any("celery" in str(s.get("command")) for s in ours.values()):
        problems.append("no Celery worker service")
    for name, service in sorted(ours.items()):
        env = service.get("environment") or {}
        for setting in sorted(settings_read_by_code() - set(env)):
            problems.append(f"{name}: {setting} is not set")
        for setting, pattern in AIRFLOW.items():
            if not re.search(pattern, str(env.get(setting, ""))):
                problems.append(f"{name}: {setting} is missing or wrong")
        for volume in ("/opt/cdr/keyring",):
            if not any(
                str(v).endswith(volume) or volume in str(v) for v in service.get("volumes", [])
            ):
                problems.append(f"{name}: the keyring volume is not mounted")
    return problems


@pytest.fixture(scope="module")
def tool() -> None:
    assert shutil.which("docker-compose"), "docker-compose is installed by `make test`"


def test_the_compose_file_is_valid(tool: None) -> None:
    subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        check=True,
    )


def test_every_setting_the_code_reads_is_set_where_the_code_runs(tool: None) -> None:
    assert {"CDR_STORE", "CDR_KEYRING", "CDR_S3_ENDPOINT_URL"} <= settings_read_by_code()
    assert compose_problems(COMPOSE) == []
    services = resolved(COMPOSE)["services"]
    assert {"postgres", "redis", "minio", "minio-init", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-worker"} <= set(services)  # fmt: skip
    assert "--with-lock" in str(services["minio-init"]["entrypoint"])
    assert "connections add cdr_store" in str(services["airflow-init"]["command"])
    env = services["airflow-apiserver"]["environment"]
    users = dict(u.split(":") for u in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert {"officer", "approver"} <= set(users)  # four eyes need two people besides the admin
    assert env["CDR_APPROVERS"] == "approver"


def test_a_misspelt_variable_is_caught(tool: None, tmp_path: Path) -> None:
    broken = tmp_path / "docker" / "docker-compose.yml"
    broken.parent.mkdir()
    broken.write_text(COMPOSE.read_text().replace("  CDR_STORE:", "  CDR_STOER:"))
    problems = compose_problems(broken)
    assert "airflow-worker: CDR_STORE is not set" in problems


def test_the_example_env_holds_no_real_secret() -> None:
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert "change-me" in values[key]
    assert not (ROOT / "docker" / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()


LONG_RUNNING = ("postgres", "redis", "minio", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker")  # fmt: skip


def test_services_report_health_and_airflow_waits_for_a_completed_init(tool: None) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    assert "version" not in raw  # obsolete in the Compose Specification
    services = resolved(COMPOSE)["services"]
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in LONG_RUNNING[3:]:
        needs = services[name]["depends_on"]
        assert needs["airflow-init"] == {"condition": "service_completed_successfully"}, name
        for base in ("postgres", "redis", "minio"):
            assert needs[base] == {"condition": "service_healthy"}, (name, base)
    init = services["airflow-init"]["depends_on"]
    assert init["minio-init"] == {"condition": "service_completed_successfully"}
    assert services["minio-init"]["depends_on"]["minio"] == {"condition": "service_healthy"}


def test_the_docs_use_docker_compose_v2() -> None:
    for doc in (ROOT / "README.md", ROOT / "docker" / "README.md", COMPOSE):
        old = [
            line for line in doc.read_text().splitlines() if re.search(r"docker-compose -f", line)
        ]
        assert old == [], doc.name


def test_the_localstack_profile_notifies_the_queue_of_the_stores_landing(tool: None) -> None:
    """`--profile localstack`: LocalStack's data bucket notifies the queue of objects created
    under the store's own landing/ prefix, and the endpoint the code uses follows it."""
    env = ENV_EXAMPLE.read_text() + "CDR_S3_ENDPOINT=http://localstack:4566\n"
    local_env = COMPOSE.parent / ".env.localstack-test"
    local_env.write_text(env)
    try:
        out = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "--env-file", str(local_env),
             "--profile", "localstack", "config"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        local_env.unlink()
    services = yaml.safe_load(out.stdout)["services"]

    def text(value: object) -> str:  # a command as one string, shell escapes dropped
        return (value if isinstance(value, str) else " ".join(map(str, value))).replace("\\", "")  # type: ignore[arg-type]

    init = text(services["localstack-init"]["entrypoint"])
    prefix = services["airflow-worker"]["environment"]["CDR_STORE"].split("/", 3)[3]
    assert f'"Value": "{prefix}/landing/"' in init and '"s3:ObjectCreated:*"' in init
    assert "create-queue --queue-name cdr-arrivals" in init and "--object-lock-enabled-for-bucket" in init  # fmt: skip
    worker = services["airflow-worker"]["environment"]
    assert worker["CDR_S3_ENDPOINT_URL"] == "http://localstack:4566"
    assert '"endpoint_url": "http://localstack:4566"' in worker["AIRFLOW_CONN_AWS_DEFAULT"]
    assert "localstack:4566" in text(services["airflow-init"]["command"])

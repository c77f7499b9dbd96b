"""The project's own contract: README commands, CI entry point, pins, and the image definition."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)", head, flags=re.M)
    assert commands[:2] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\[[^\]]*\])?)==([\w.]+)", line.strip())
        if m:
            pins[re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")] = m.group(2)
    return pins


def test_every_direct_requirement_is_pinned_and_agrees_with_the_constraints() -> None:
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if line.strip() and not line.startswith(("#", "-r")):
                assert "==" in line and not re.search(r"[<>~]", line), f"{name}: {line}"
    direct = _pins("requirements.txt") | _pins("requirements-dev.txt")
    constraints = _pins("constraints.txt")
    assert {"apache-airflow", "polars", "great-expectations", "moto", "celery"} <= set(direct)
    for name, version in direct.items():
        assert constraints.get(name) == version, name
    assert direct["apache-airflow"].startswith("3.3.")
    assert direct["great-expectations"].startswith("1.24.")
    assert direct["polars"].startswith("2.")


def test_dockerfile_uses_the_pinned_airflow_and_copies_what_exists() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:([\d.]+)-python3\.11$", text, flags=re.M)
    assert base and base.group(1) == _pins("requirements.txt")["apache-airflow"]
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
        for src in line.split():
            assert (ROOT / src).exists(), src

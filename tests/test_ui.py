"""`make ui` as two people use it, in a real browser (headless Chromium, driven by Playwright).

The UI is started exactly as `make ui` starts it (`python -m cdr_airflow.ui`), on a free port and
a temporary store. An officer records two export requests and triggers `cdr_le_export` for each;
the officer's Approve is refused (the officer is not one of the step's respondents); the approver
approves the first, which is delivered and verifies, and rejects the second, whose run then shows
as failed beside the delivered one. Stopping the UI stops every process it started.

Screenshots are kept in `test-artifacts/ui/` (or `$CDR_TEST_ARTIFACTS/ui/`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.airflow_ui import UI, api, running_ui
from tests.conftest import ROOT
from tests.helpers import local_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CDR_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "ui"
RUN_SECONDS = 240


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    assert Path(CHROMIUM).exists(), "Chromium is installed by `make test` (make system)"
    base = tmp_path_factory.mktemp("ui")
    with running_ui(base, local_settings(base)) as running:
        yield running


def _resources():  # type: ignore[no-untyped-def]
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources

    return Resources.from_settings(Settings.from_env())


def _record_requests(tmp: Path) -> tuple[bytes, list[str]]:
    """Records delivered, and two export requests recorded by the officer: the authority's
    private key and the cases."""
    from pipeline.flows.case_request import create_request
    from pipeline.flows.ingest import ingest_file
    from pipeline.proof.package import new_recipient_key
    from pipeline.records.synth import generate

    res = _resources()
    g = generate("messaging_jsonl", tmp / "m.jsonl", 400, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    secret, public = new_recipient_key(None)
    cases = ["LE-UI-1", "LE-UI-2"]
    for case in cases:
        create_request(res, "export", {
            "case": case, "authority": "FIA", "legal_basis": "PECA s.31",
            "requested_by": "officer", "identifiers": [sorted(g.numbers)[0]],
            "default_region": "PK", "date_from": "2025-03-01", "date_to": "2025-04-30",
            "recipient_key": public.decode()})  # fmt: skip
    return secret, cases


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _sign_in(browser, ui: UI, user: str):  # type: ignore[no-untyped-def]
    """A fresh session (its own cookies) signed in as `user`."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{ui.url}/auth/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(ui.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
    return page


def _trigger(page, ui: UI, case: str) -> str:  # type: ignore[no-untyped-def]
    """Trigger cdr_le_export for `case` from the UI's dialog: the new run's id."""
    page.goto(f"{ui.url}/dags/cdr_le_export")
    page.get_by_role("button", name="Trigger Dag").click(timeout=120_000)
    dialog = page.get_by_role("dialog")
    dialog.locator("#element_case").fill(case)
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/"), timeout=60_000)
    return page.url.rsplit("/runs/", 1)[1].split("/")[0]


def _approval_page(page, ui: UI, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """The run's approval step, once it waits for an answer (its buttons shown)."""
    from urllib.parse import quote

    url = f"{ui.url}/dags/cdr_le_export/runs/{quote(run_id)}/tasks/approve/required_actions"
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        page.goto(url)
        try:
            page.get_by_role("button", name="Approve", exact=True).wait_for(timeout=10_000)
            return
        except Exception:  # not asked yet: the step is still being scheduled
            time.sleep(3)
    raise AssertionError(f"the approval step of {run_id} never asked")


def _run_state(ui: UI, run_id: str) -> str:
    """The run's state, as the run list shows it (the REST API behind it), once final."""
    from urllib.parse import quote

    deadline = time.monotonic() + RUN_SECONDS
    state = ""
    while time.monotonic() < deadline:
        state = api(ui, "GET", f"/dags/cdr_le_export/dagRuns/{quote(run_id)}")["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    raise AssertionError(f"run {run_id} still {state!r}")


def test_an_officer_cannot_approve_the_approver_delivers_and_rejects(
    ui: UI, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from pipeline.proof.verify_export import verify_package

    assert set(ui.passwords) == {"officer", "approver", "admin"}
    secret, (first, second) = _record_requests(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])  # fmt: skip
        officer = _sign_in(browser, ui, "officer")
        delivered = _trigger(officer, ui, first)
        _approval_page(officer, ui, delivered)
        assert "requested_by: officer" in officer.locator("body").inner_text()
        officer.get_by_role("button", name="Approve", exact=True).click()
        officer.get_by_text("Access Denied").wait_for(timeout=30_000)  # the API refused it
        _shot(officer, "1-officer-approve-refused")

        approver = _sign_in(browser, ui, "approver")
        _approval_page(approver, ui, delivered)
        approver.get_by_role("button", name="Approve", exact=True).click()
        assert _run_state(ui, delivered) == "success"
        approver.goto(f"{ui.url}/dags/cdr_le_export/runs")
        _shot(approver, "2-approved-run-delivered")

        rejected = _trigger(officer, ui, second)
        _approval_page(approver, ui, rejected)
        approver.get_by_role("button", name="Reject", exact=True).click()
        assert _run_state(ui, rejected) == "failed"
        approver.goto(f"{ui.url}/dags/cdr_le_export/runs")
        approver.get_by_text("Failed").first.wait_for(timeout=30_000)
        runs = approver.locator("body").inner_text()
        assert "Success" in runs and "Failed" in runs  # told apart at a glance
        _shot(approver, "3-rejected-run-failed-beside-delivered")
        browser.close()

    res = _resources()
    packages = [o.key for o in res.store.list(f"exports/{first}/") if o.key.endswith(".cdrx")]
    assert len(packages) == 1
    verdict = verify_package(
        res.store.get_bytes(packages[0]), secret, res.keyring.public_key_pem().encode()
    )
    assert verdict.ok and verdict.manifest["counts"]["records"] > 0
    assert not list(res.store.list(f"exports/{second}/"))
    from pipeline.proof.audit import read_log

    rejection = next(e for e in read_log(res.store) if e["action"] == "request_rejected")
    assert (rejection["actor"], rejection["what"]["case"]) == ("approver", second)


def _ingest_running(ui: UI, tmp: Path) -> None:
    """A cdr_ingest run whose `ingest` task is running now (a big file in landing)."""
    from pipeline.flows.ingest import copy_into_landing
    from pipeline.records.synth import generate

    g = generate("canonical_csv", tmp / "big.csv", 600_000, start=dt.date(2025, 3, 1))
    copy_into_landing(_resources().store, g.path, "switch-1")
    # Unpaused, the hourly DAG starts a run for the latest hour (no catch-up), beside the one
    # triggered here, which waits for it (one run at a time): either may take the file.
    api(ui, "PATCH", "/dags/cdr_ingest", {"is_paused": False})
    api(ui, "POST", "/dags/cdr_ingest/dagRuns", {"logical_date": None})
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        tis = api(ui, "GET", "/dags/cdr_ingest/dagRuns/~/taskInstances")
        if any(t["task_id"] == "ingest" and t["state"] == "running" for t in tis["task_instances"]):  # fmt: skip
            return
        time.sleep(0.5)
    raise AssertionError("the ingest task never ran")


def test_stopping_the_ui_stops_every_process_it_started_a_running_task_too(
    ui: UI, tmp_path: Path
) -> None:
    _ingest_running(ui, tmp_path)
    started = ui.processes() | ui.pids
    # the UI, its four components, and the running task's own process group
    assert len(started) >= 6
    task_groups = {os.getpgid(p) for p in started if _running(p)} - {os.getpgid(ui.proc.pid)}
    assert len(task_groups) >= 5  # each component's group, and the task runner's
    ui.proc.send_signal(signal.SIGTERM)
    ui.proc.wait(timeout=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(p) for p in started):
        time.sleep(0.5)
    left = [p for p in started if _running(p)]
    assert left == [], [psutil.Process(p).cmdline() for p in left]
    assert not (ui.home / "ui.pids").exists()


def _running(pid: int) -> bool:
    """Alive and not merely a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

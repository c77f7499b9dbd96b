"""`python -m cdr_airflow.demo_report [--expect-failed REF ...]`: what the Airflow UI shows of the
latest `cdr_ingest` run, read from the metadata database: each task's state, mapped tasks by the
batch of files they are named after (`FAILED <ref>` once a file of it failed). Exits 1 if a task
failed that was not expected to (the demo drops one unreadable upload on purpose: its batch's
task fails, honestly, and so does the run's `verdict`)."""

from __future__ import annotations

import argparse
import sys

#: what the demo's output says beside a task that failed by design
EXPECTED = "expected: the demo's unreadable upload is quarantined whole on purpose"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdr_airflow.demo_report")
    parser.add_argument("--dag-id", default="cdr_ingest")
    parser.add_argument("--expect-failed", action="append", default=[], metavar="REF")
    args = parser.parse_args(argv)

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from pipeline.flows.ingest_batches import failed_in_label

    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == args.dag_id)
            .order_by(DagRun.start_date.desc())
            .first()
        )
        if run is None:
            print(f"no run of {args.dag_id}", file=sys.stderr)
            return 1
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
        print(f"DAG run {run.run_id} (logical date {run.logical_date}): {run.state}")
        unexpected = []
        for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
            name = ti.task_id + (f"[{ti.rendered_map_index}]" if ti.map_index >= 0 else "")
            if ti.map_index >= 0:
                named = failed_in_label(ti.rendered_map_index)
                expected = bool(named) and set(named) <= set(args.expect_failed)
            else:
                expected = ti.task_id == "verdict" and bool(args.expect_failed)
            failed = ti.state == "failed"
            print(f"  {name}: {ti.state}" + (f" ({EXPECTED})" if failed and expected else ""))
            if failed and not expected:
                unexpected.append(name)
    if unexpected:
        print(f"failed unexpectedly: {', '.join(unexpected)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

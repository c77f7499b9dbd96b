"""One base for the project's own errors: a message fit to show a user, and an exit status.

A `PipelineError`'s message is written by the pipeline and never quotes a record's content, so
the CLI prints it as one line and the Airflow notifier may pass it on; any other exception is
reported by its type alone. Exit statuses: 2 for a request or input that cannot be used as
given (usage), 1 for a run that failed.
"""

from __future__ import annotations

USAGE = 2
FAILED = 1


class PipelineError(Exception):
    """An error of the pipeline's own, with the exit status a command ends with."""

    exit_status: int = FAILED

    @property
    def message(self) -> str:
        return str(self)

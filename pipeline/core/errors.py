"""One base for the project's own errors: a message fit to show a user, and an exit status.

A `PipelineError`'s message is written by the pipeline and never quotes a record's content, so
the CLI prints it as one line and the Airflow notifier may pass it on; any other exception is
reported by its type alone. Exit statuses: 2 for a request or input that cannot be used as
given (usage), 1 for a run that failed.
"""

from __future__ import annotations

USAGE = 2
FAILED = 1


def failures() -> tuple[type[BaseException], ...]:
    """Every way a step can fail on what it reads: exceptions, and a panic of the polars engine
    on input it cannot handle (a `BaseException`, which `except Exception` alone lets through).
    A function (`except failures()`), so that importing this module does not load polars."""
    import polars as pl

    return (Exception, pl.exceptions.PanicException)


class PipelineError(Exception):
    """An error of the pipeline's own, with the exit status a command ends with."""

    exit_status: int = FAILED

    @property
    def message(self) -> str:
        return str(self)


class RefusedError(PipelineError, ValueError):
    """A request or input refused whole before anything is done; `problems` lists every reason
    (each fit to show: names and rules, never identifier values)."""

    exit_status = USAGE
    #: how the message starts
    refused = "request refused"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{self.refused}: " + "; ".join(problems))
        self.problems = problems


def one_line(exc: BaseException) -> str:
    """What to print for a failure: a pipeline error's message, or a store or network error's
    type and first line (S3 answers name the operation and code, never a record's content)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, PipelineError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UsageError(PipelineError):
    """What was given cannot be used as given (a path, an option): nothing was done."""

    exit_status = USAGE

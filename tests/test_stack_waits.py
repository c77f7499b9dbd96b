"""The distributed test's waits hold under load: a slow or refused answer from the api-server is
asked again until the deadline, and only the deadline (or a component exiting) fails them."""

from __future__ import annotations

import pytest

from tests.distributed.stack import Stack


def _stack() -> Stack:
    stack = Stack.__new__(Stack)  # no cluster: only the waiting is under test
    stack.procs = {}
    return stack


def test_a_slow_api_server_is_asked_again_until_it_answers() -> None:
    answers = iter([TimeoutError("timed out"), ConnectionRefusedError(), True])

    def check() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    _stack()._wait(check, 30, "an answer")
    assert next(answers, "none left") == "none left"  # asked three times, then done


def test_only_the_deadline_fails_a_wait_and_names_the_last_error() -> None:
    def check() -> bool:
        raise TimeoutError("timed out")

    with pytest.raises(TimeoutError, match=r"waited 2 s for the stack .*TimeoutError"):
        _stack()._wait(check, 2, "the stack")

"""Exceptions: one hierarchy, matching builtins, the value and the fix."""

from __future__ import annotations

import pytest

import pgjobs

# (error, builtin it also is, texts its message must contain: value, fix)
ERRORS: list[tuple[pgjobs.PgJobsError, type[Exception] | None, list[str]]] = [
    (pgjobs.ConfigError(["schema: bad"]), ValueError, ["1 problem", "schema: bad"]),
    (
        pgjobs.QueueNotFound("mail", ["email", "sms"]),
        LookupError,
        ["'mail'", "'email', 'sms'", "add it to JobSystemConfig.queues"],
    ),
    (
        pgjobs.PayloadValidationError("q", "payload.a is nan", field="payload.a"),
        ValueError,
        ["'q'", "payload.a is nan"],
    ),
    (pgjobs.SendOptionError("delay must be positive"), ValueError, ["delay"]),
    (pgjobs.HandlerError(["queue 'q' has no handler"]), ValueError, ["'q'"]),
    (
        pgjobs.DuplicateJob("q", "key-1"),
        None,
        ["'key-1'", "'q'", "raise_on_duplicate"],
    ),
    (pgjobs.JobNotFound(42), LookupError, ["42", "get_recent_jobs"]),
    (pgjobs.JobTimeout("q", 7, 2.5), TimeoutError, ["job 7", "2.5 s", "raise"]),
    (pgjobs.DatabaseUnavailable("cannot reach"), ConnectionError, ["cannot reach"]),
    (pgjobs.UsageError("use send"), RuntimeError, ["use send"]),
]


@pytest.mark.parametrize(
    ("error", "builtin", "texts"),
    ERRORS,
    ids=[type(case[0]).__name__ for case in ERRORS],
)
def test_error_message_and_bases(
    error: pgjobs.PgJobsError, builtin: type[Exception] | None, texts: list[str]
) -> None:
    assert isinstance(error, pgjobs.PgJobsError)
    if builtin is not None:
        assert isinstance(error, builtin)
    for text in texts:
        assert text in str(error)


def test_error_attributes() -> None:
    error = pgjobs.PayloadValidationError("q", "bad", field="payload.a")
    assert (error.queue, error.field, error.detail) == ("q", "payload.a", "bad")


def test_error_problems_listed() -> None:
    error = pgjobs.ConfigError(["a: one", "b: two"])
    assert error.problems == ["a: one", "b: two"]
    assert str(error) == (
        "invalid pgjobs configuration (2 problems):\n  - a: one\n  - b: two"
    )


def test_error_exported_names() -> None:
    exported = {
        name
        for name in pgjobs.__all__
        if isinstance(getattr(pgjobs, name), type)
        and issubclass(getattr(pgjobs, name), Exception)
    }
    defined = {
        name
        for name, value in vars(pgjobs.errors).items()
        if isinstance(value, type) and issubclass(value, pgjobs.PgJobsError)
    }
    assert exported == defined

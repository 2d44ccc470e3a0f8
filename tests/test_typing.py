"""Static types of the public API, checked by running mypy --strict.

The `check_*` functions are never called: mypy reads them, and the test
below fails if it finds any error in this file. A second file with one
deliberate error per marked line proves that mypy rejects wrong payloads.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, assert_type

import procrastinate
import pydantic
import pytest

import pgjobs

REPOSITORY = Path(__file__).resolve().parent.parent


class Email(pydantic.BaseModel):
    to: str


class Other(pydantic.BaseModel):
    name: str


EMAILS = pgjobs.queue(Email, retry_limit=3)
PLAIN = pgjobs.queue()


def check_definitions() -> None:
    assert_type(EMAILS, pgjobs.Queue[Email])
    assert_type(PLAIN, pgjobs.Queue[dict[str, Any]])
    config = pgjobs.JobSystemConfig(dsn="postgresql://localhost/app")
    assert_type(config, pgjobs.JobSystemConfig)
    assert_type(pgjobs.create_job_system(config), pgjobs.JobSystem)
    jobs = pgjobs.create_job_system({"queues": {"emails": EMAILS}})
    assert_type(jobs, pgjobs.JobSystem)
    assert_type(jobs.config, pgjobs.JobSystemConfig)
    assert_type(jobs.app, procrastinate.App)


def check_sync_sending(jobs: pgjobs.JobSystem) -> None:
    assert_type(jobs.send_sync(EMAILS, Email(to="a")), int | None)
    assert_type(jobs.send_sync(EMAILS, {"to": "a"}), int | None)
    assert_type(jobs.send_sync("emails", {"to": "a"}), int | None)
    assert_type(jobs.send_sync(PLAIN, {"any": [1, 2]}), int | None)
    assert_type(jobs.send_many_sync(EMAILS, [Email(to="a")]), list[int])
    assert_type(jobs.stop_sync(), None)


async def check_async_sending(jobs: pgjobs.JobSystem) -> None:
    at = datetime.datetime.now(datetime.UTC)
    assert_type(await jobs.send(EMAILS, Email(to="a")), int | None)
    assert_type(await jobs.send(EMAILS, {"to": "a"}, run_at=at), int | None)
    assert_type(
        await jobs.send(
            "emails", {"to": "a"}, delay=datetime.timedelta(seconds=5), priority=3
        ),
        int | None,
    )
    assert_type(
        await jobs.send(EMAILS, Email(to="a"), singleton_key="k", lock="l"), int | None
    )
    assert_type(await jobs.send_many(EMAILS, [Email(to="a")]), list[int])
    assert_type(await jobs.send_many(EMAILS, [{"to": "b"}]), list[int])
    mixed: list[Email | dict[str, str]] = [Email(to="a"), {"to": "b"}]
    assert_type(await jobs.send_many(EMAILS, mixed), list[int])
    assert_type(await jobs.send_many("emails", [{}], singleton_keys=["k"]), list[int])
    assert_type(await jobs.get_app(), procrastinate.App)
    assert_type(await jobs.init_jobs({"emails": print}, start_worker=False), None)
    assert_type(await jobs.stop(), None)


async def check_handlers(
    jobs: pgjobs.JobSystem,
    by_name: dict[str, pgjobs.Handler],
    by_queue: dict[pgjobs.Queue[Any], pgjobs.Handler],
    context: pgjobs.JobContext,
) -> None:
    await jobs.init_jobs(by_name)
    await jobs.init_jobs(by_queue)
    jobs.init_jobs_sync(by_name, start_worker=False)

    @jobs.handler(EMAILS)
    def deliver(payload: Email, context: pgjobs.JobContext) -> int:
        return context.attempt

    assert_type(deliver(Email(to="a"), context), int)


def check_errors(error: pgjobs.PgJobsError) -> None:
    if isinstance(error, pgjobs.ConfigError):
        assert_type(error.problems, list[str])
    if isinstance(error, pgjobs.PayloadValidationError):
        assert_type(error.field, str | None)
    if isinstance(error, pgjobs.DuplicateJob):
        assert_type(error.singleton_key, str)


# Each line marked `# error` must make mypy report an error on that line.
WRONG = """
    from __future__ import annotations

    import pydantic

    import pgjobs


    class Email(pydantic.BaseModel):
        to: str


    class Other(pydantic.BaseModel):
        name: str


    EMAILS = pgjobs.queue(Email)
    PLAIN = pgjobs.queue()


    async def misuse(jobs: pgjobs.JobSystem) -> None:
        await jobs.send(EMAILS, Other(name="x"))  # error
        jobs.send_sync(EMAILS, 42)  # error
        await jobs.send_many(EMAILS, [Email(to="a"), Other(name="x")])  # error
        jobs.send_many_sync(EMAILS, [Other(name="x")])  # error
        await jobs.send(PLAIN, ["not", "an", "object"])  # error
        await jobs.send(EMAILS, Email(to="a"), priority="high")  # error
        await jobs.send(EMAILS, Email(to="a"), delay="soon")  # error
        await jobs.send(EMAILS, Email(to="a"), True)  # error
        text: str = await jobs.send(EMAILS, Email(to="a"))  # error
        ids: list[str] = await jobs.send_many(EMAILS, [])  # error
        pgjobs.queue(int)  # error
        pgjobs.queue(Email, retry_limit="3")  # error
        await jobs.send(EMAILS, Email(to="a"))
        await jobs.send("emails", Other(name="x"))
"""


def run_mypy(*paths: Path) -> list[str]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            *map(str, paths),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr
    return [line for line in completed.stdout.splitlines() if ": error:" in line]


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Run mypy once on this file and on the misuse file; errors by file name."""
    wrong = tmp_path_factory.mktemp("typing") / "wrong_usage.py"
    wrong.write_text(textwrap.dedent(WRONG), encoding="utf-8")
    errors = run_mypy(Path(__file__), wrong)
    return {
        "this": [line for line in errors if "test_typing.py" in line],
        "wrong": [line for line in errors if "wrong_usage.py" in line],
    }


def test_typing_public_api(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors["this"] == []


def test_typing_misuse_rejected(mypy_errors: dict[str, list[str]]) -> None:
    source = textwrap.dedent(WRONG).splitlines()
    expected = {n for n, line in enumerate(source, 1) if line.endswith("# error")}
    reported = {
        int(match.group(1))
        for line in mypy_errors["wrong"]
        if (match := re.search(r"wrong_usage\.py:(\d+):", line))
    }
    assert sorted(expected - reported) == [], mypy_errors["wrong"]
    assert sorted(reported - expected) == [], mypy_errors["wrong"]


def test_all_sorted_and_importable() -> None:
    assert pgjobs.__all__ == sorted(pgjobs.__all__)
    for name in pgjobs.__all__:
        assert hasattr(pgjobs, name), name

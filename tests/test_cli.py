"""The `pgjobs` command, run as a subprocess against a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import pgjobs
from pgjobs._cli_parser import build_parser, parse_duration
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.apps.cli_app:jobs"
# Bounds a hung command; no test asserts on how long a command takes.
COMMAND_TIMEOUT = 90


def command_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": dsn, "PGJOBS_APP": APP, **extra}
    env.pop("PGJOBS_TEST_DSN", None)
    return env


def run_cli(
    dsn: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgjobs", *args],
        cwd=ROOT,
        env=env if env is not None else command_env(dsn),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@pytest.fixture
async def app_jobs(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[pgjobs.JobSystem]:
    """The test app's job system in this process, on the test database."""
    monkeypatch.setenv("DATABASE_URL", dsn)
    # Imported here because importing it builds a job system from DATABASE_URL.
    from tests.apps import cli_app

    system = cli_app.make_jobs()
    yield system
    await system.stop()


@pytest.fixture
def migrated(dsn: str) -> str:
    """The test database, with the schema at the latest version."""
    result = run_cli(dsn, "migrate")
    assert result.returncode == 0, result.stderr
    return dsn


def job_status(query: Callable[..., list[tuple[Any, ...]]], job_id: int) -> str:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return str(rows[0][0]) if rows else "missing"


# -- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("1h30m", 5400), ("90", 90), ("2w", 1209600)],
)
def test_parse_duration_units(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "0", "-5s", "h"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)


def test_cli_help_names_units() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    prune_help = commands["prune"].format_help()
    demo_help = commands["demo"].format_help()
    assert "--older-than DURATION" in prune_help
    assert "a bare number is seconds" in prune_help
    assert "--limit N" in demo_help
    assert "--timeout DURATION" in demo_help


def test_cli_help_every_command() -> None:
    for command in ["worker", "stats", "jobs", "show", "rerun", "cancel", "prune"]:
        result = subprocess.run(
            [sys.executable, "-m", "pgjobs", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, command
        assert "--app MODULE:ATTR" in result.stdout, command


def test_cli_options_after_command() -> None:
    args = build_parser().parse_args(["stats", "--app", "a:b", "-v"])
    assert args.app == "a:b"
    assert args.verbose == 1


def test_cli_options_before_command() -> None:
    args = build_parser().parse_args(["--app", "a:b", "-vv", "stats"])
    assert args.app == "a:b"
    assert args.verbose == 2


# -- loading the app ---------------------------------------------------------


def test_cli_without_app_fails(dsn: str) -> None:
    env = command_env(dsn)
    env.pop("PGJOBS_APP")
    result = run_cli(dsn, "stats", env=env)
    assert result.returncode == 1
    assert "no job system given" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_module_fails(dsn: str) -> None:
    result = run_cli(dsn, "--app", "tests.apps.no_such_module:jobs", "stats")
    assert result.returncode == 1
    assert "'tests.apps.no_such_module' not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_attribute_fails(dsn: str) -> None:
    result = run_cli(dsn, "--app", "tests.apps.cli_app:nothing", "stats")
    assert result.returncode == 1
    assert "has no attribute 'nothing'" in result.stderr


def test_cli_app_not_job_system_fails(dsn: str) -> None:
    result = run_cli(dsn, "--app", "tests.apps.cli_app:WORKER", "stats")
    assert result.returncode == 1
    assert "is a dict, not a JobSystem" in result.stderr


def test_cli_app_factory_accepted(migrated: str) -> None:
    result = run_cli(migrated, "--app", "tests.apps.cli_app:make_jobs", "migrate")
    assert result.returncode == 0, result.stderr


def test_cli_unreachable_database_fails(dsn: str) -> None:
    unreachable = "postgresql://someone:s3cret-word@127.0.0.1:1/nowhere"
    result = run_cli(dsn, "migrate", env=command_env(unreachable))
    assert result.returncode == 1
    assert "127.0.0.1:1/nowhere" in result.stderr
    assert "s3cret-word" not in result.stderr
    assert "Traceback" not in result.stderr


# -- migrate -----------------------------------------------------------------


def test_cli_migrate_installs_schema(empty_dsn: str) -> None:
    result = run_cli(empty_dsn, "migrate", "--json")
    assert result.returncode == 0, result.stderr
    assert "0001_initial.sql" in json.loads(result.stdout)["applied"]


def test_cli_migrate_twice_up_to_date(migrated: str) -> None:
    result = run_cli(migrated, "migrate")
    assert result.returncode == 0, result.stderr
    assert "is up to date" in result.stdout


# -- dashboard commands ------------------------------------------------------


def test_cli_stats_json_counts(migrated: str, app_jobs: pgjobs.JobSystem) -> None:
    app_jobs.send_many_sync("quick", [{"n": 1}, {"n": 2}])
    result = run_cli(migrated, "stats", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    by_queue = {queue["queue"]: queue for queue in stats["queues"]}
    assert by_queue["quick"]["queued"] == 2
    assert by_queue["slow"]["total"] == 0


def test_cli_stats_table(migrated: str, app_jobs: pgjobs.JobSystem) -> None:
    app_jobs.send_sync("quick", {"n": 1})
    result = run_cli(migrated, "stats")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["queue", "queued", "scheduled"]
    assert any(row.split()[:2] == ["quick", "1"] for row in rows)


def test_cli_jobs_json_filters(migrated: str, app_jobs: pgjobs.JobSystem) -> None:
    quick_id = app_jobs.send_sync("quick", {"n": 1})
    app_jobs.send_sync("slow", {"seconds": 1})
    result = run_cli(migrated, "jobs", "--queue", "quick", "--json")
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert [job["id"] for job in page["jobs"]] == [quick_id]


def test_cli_jobs_table(migrated: str, app_jobs: pgjobs.JobSystem) -> None:
    ids = app_jobs.send_many_sync("quick", [{"n": 1}, {"n": 2}])
    result = run_cli(migrated, "jobs", "--per-page", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "queue", "state"]
    assert lines[1].split()[:3] == [str(ids[-1]), "quick", "queued"]
    assert "Page 1 of 2" in result.stdout


def test_cli_jobs_invalid_page(migrated: str) -> None:
    result = run_cli(migrated, "jobs", "--page", "0")
    assert result.returncode == 2
    assert "invalid page '0'" in result.stderr


def test_cli_show_json(migrated: str, app_jobs: pgjobs.JobSystem) -> None:
    job_id = app_jobs.send_sync("quick", {"n": 7})
    result = run_cli(migrated, "show", str(job_id), "--json")
    assert result.returncode == 0, result.stderr
    detail = json.loads(result.stdout)
    assert detail["id"] == job_id
    assert detail["payload"] == {"n": 7}


def test_cli_show_unknown_id(migrated: str) -> None:
    result = run_cli(migrated, "show", "987654")
    assert result.returncode == 1
    assert "job 987654 not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_show_unknown_id_verbose(migrated: str) -> None:
    result = run_cli(migrated, "-v", "show", "987654")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_cli_show_invalid_id(migrated: str) -> None:
    result = run_cli(migrated, "show", "abc")
    assert result.returncode == 2
    assert "invalid job id 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_cli_show_failed_job(
    migrated: str, app_jobs: pgjobs.JobSystem, query: Callable[..., Any]
) -> None:
    job_id = await app_jobs.send("failing", {"n": 3})
    await app_jobs.init_jobs()
    await wait_for(lambda: job_status(query, job_id) == "failed")
    result = run_cli(migrated, "show", str(job_id))
    assert result.returncode == 0, result.stderr
    assert "failed" in result.stdout
    assert "ValueError: refusing payload {'n': 3}" in result.stdout


async def test_cli_rerun_failed_job(
    migrated: str, app_jobs: pgjobs.JobSystem, query: Callable[..., Any]
) -> None:
    job_id = await app_jobs.send("failing", {"n": 4})
    await app_jobs.init_jobs()
    await wait_for(lambda: job_status(query, job_id) == "failed")
    await app_jobs.stop()
    result = run_cli(migrated, "rerun", str(job_id), "--json")
    assert result.returncode == 0, result.stderr
    new_id = json.loads(result.stdout)["job_id"]
    assert new_id != job_id
    assert job_status(query, new_id) == "todo"


def test_cli_rerun_queued_job_rejected(
    migrated: str, app_jobs: pgjobs.JobSystem
) -> None:
    job_id = app_jobs.send_sync("quick", {"n": 1})
    result = run_cli(migrated, "rerun", str(job_id))
    assert result.returncode == 1
    assert f"job {job_id} is queued" in result.stderr


def test_cli_cancel_queued_job(
    migrated: str, app_jobs: pgjobs.JobSystem, query: Callable[..., Any]
) -> None:
    job_id = app_jobs.send_sync("quick", {"n": 1})
    result = run_cli(migrated, "cancel", str(job_id))
    assert result.returncode == 0, result.stderr
    assert f"Job {job_id} cancelled" in result.stdout
    assert job_status(query, job_id) == "cancelled"


def test_cli_cancel_unknown_id(migrated: str) -> None:
    result = run_cli(migrated, "cancel", "987654")
    assert result.returncode == 1
    assert "987654" in result.stderr


async def test_cli_prune_finished_jobs(
    migrated: str, app_jobs: pgjobs.JobSystem, query: Callable[..., Any]
) -> None:
    done_id = await app_jobs.send("quick", {"n": 1})
    await app_jobs.init_jobs()
    await wait_for(lambda: job_status(query, done_id) == "succeeded")
    await app_jobs.stop()
    waiting_id = await app_jobs.send("quick", {"n": 2})
    result = run_cli(migrated, "prune", "--older-than", "0.001", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == 1
    assert job_status(query, done_id) == "missing"
    assert job_status(query, waiting_id) == "todo"


def test_cli_prune_requires_age(migrated: str) -> None:
    result = run_cli(migrated, "prune")
    assert result.returncode == 2
    assert "--older-than" in result.stderr


# -- worker ------------------------------------------------------------------


class Worker:
    """A `pgjobs worker` process whose output goes to files."""

    def __init__(self, dsn: str, folder: Path, *args: str) -> None:
        self.stderr_path = folder / "worker.stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pgjobs", "worker", *args],
                cwd=ROOT,
                env=command_env(dsn),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


async def test_cli_worker_runs_jobs(
    migrated: str,
    app_jobs: pgjobs.JobSystem,
    query: Callable[..., Any],
    tmp_path: Path,
) -> None:
    worker = Worker(migrated, tmp_path)
    try:
        job_id = await app_jobs.send("quick", {"n": 1})
        await wait_for(lambda: job_status(query, job_id) == "succeeded", timeout=60)
    finally:
        worker.signal(signal.SIGINT)
        code = worker.finish()
    assert code == 0, worker.stderr
    assert "Stopped the job system" in worker.stderr


async def test_cli_worker_queue_option(
    migrated: str,
    app_jobs: pgjobs.JobSystem,
    query: Callable[..., Any],
    tmp_path: Path,
) -> None:
    worker = Worker(migrated, tmp_path, APP, "--queue", "slow")
    try:
        slow_id = await app_jobs.send("slow", {"seconds": 0})
        quick_id = await app_jobs.send("quick", {"n": 1})
        await wait_for(lambda: job_status(query, slow_id) == "succeeded", timeout=60)
        assert job_status(query, quick_id) == "todo"
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.finish()
    assert code == 0, worker.stderr


def test_cli_worker_unknown_queue(migrated: str) -> None:
    result = run_cli(migrated, "worker", "--queue", "nope")
    assert result.returncode == 1
    assert "'nope'" in result.stderr


def test_cli_worker_without_queues(migrated: str) -> None:
    result = run_cli(migrated, "worker", "tests.apps.cli_app:make_empty_jobs")
    assert result.returncode == 1
    assert "has no queues" in result.stderr


async def test_cli_worker_sigterm_lets_job_finish(
    migrated: str,
    app_jobs: pgjobs.JobSystem,
    query: Callable[..., Any],
    tmp_path: Path,
) -> None:
    worker = Worker(migrated, tmp_path)
    try:
        job_id = await app_jobs.send("slow", {"seconds": 1.0})
        await wait_for(lambda: job_status(query, job_id) == "doing", timeout=60)
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.finish()
    assert code == 0, worker.stderr
    assert job_status(query, job_id) == "succeeded"
    assert query("SELECT id FROM procrastinate_jobs WHERE status = 'doing'") == []


async def test_cli_worker_sigterm_aborts_long_job(
    migrated: str,
    app_jobs: pgjobs.JobSystem,
    query: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # The test app's graceful timeout is 2 s, far shorter than this job.
    worker = Worker(migrated, tmp_path)
    try:
        job_id = await app_jobs.send("slow", {"seconds": 600})
        await wait_for(lambda: job_status(query, job_id) == "doing", timeout=60)
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.finish()
    assert code == 0, worker.stderr
    assert job_status(query, job_id) == "todo"
    assert query("SELECT id FROM procrastinate_jobs WHERE status = 'doing'") == []


async def test_cli_worker_second_signal(
    migrated: str,
    app_jobs: pgjobs.JobSystem,
    query: Callable[..., Any],
    tmp_path: Path,
) -> None:
    worker = Worker(migrated, tmp_path)
    try:
        job_id = await app_jobs.send("slow", {"seconds": 600})
        await wait_for(lambda: job_status(query, job_id) == "doing", timeout=60)
        worker.signal(signal.SIGTERM)
        await wait_for(lambda: "Received SIGTERM" in worker.stderr)
    finally:
        worker.signal(signal.SIGINT)
        code = worker.finish()
    assert code == 0, worker.stderr
    assert "Received SIGINT again" in worker.stderr
    assert job_status(query, job_id) == "todo"


async def test_cli_worker_early_signal(migrated: str, tmp_path: Path) -> None:
    worker = Worker(migrated, tmp_path)
    try:
        await wait_for(lambda: "Connected to PostgreSQL" in worker.stderr, timeout=60)
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.finish()
    assert code == 0, worker.stderr


UNREACHABLE = "postgresql://someone:s3cret-word@127.0.0.1:1/nowhere"


def test_cli_worker_wait_runs_out(dsn: str) -> None:
    result = run_cli(
        dsn, "worker", "--wait-for-database", "2s", env=command_env(UNREACHABLE)
    )
    assert result.returncode == 1
    assert "retrying in" in result.stderr
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in result.stderr
    assert "s3cret-word" not in result.stderr


def test_cli_worker_wait_invalid(dsn: str) -> None:
    result = run_cli(dsn, "worker", "--wait-for-database", "0")
    assert result.returncode == 2
    assert "invalid duration '0'" in result.stderr


async def test_cli_worker_signal_while_waiting(dsn: str, tmp_path: Path) -> None:
    worker = Worker(UNREACHABLE, tmp_path, APP, "--wait-for-database", "5m")
    try:
        await wait_for(lambda: "retrying in" in worker.stderr, timeout=60)
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.finish()
    assert code == 0, worker.stderr

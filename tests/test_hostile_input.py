"""Hostile and malformed input at every entry point.

Each table row feeds one bad value to the config, `send`, a handler's
return value or error, a dashboard method, the command line or the admin
page. Every row must get a specific pgjobs error (or a 4xx page), write
nothing, and leave the worker running. The dsn of every test carries a
password (which the test server's trust authentication ignores), and no
error message or log line may contain it.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import psycopg.conninfo
import pydantic
import pytest

import pgjobs
from pgjobs._sending import SendOptionError
from pgjobs.admin import create_admin_app
from pgjobs.dashboard import DashboardQueryError
from tests.conftest import build_config, wait_for
from tests.faults.processes import ROOT

pytestmark = pytest.mark.timeout(120)

SECRET = "hostile-secret-pw"
INJECTION = "q'; DROP TABLE procrastinate_jobs; --"
LONE_SURROGATE = "\ud800"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


class Email(pydantic.BaseModel):
    to: str
    retries: int = 0


@pytest.fixture
def secret_dsn(dsn: str) -> str:
    """The test database's dsn with a password added."""
    return psycopg.conninfo.make_conninfo(dsn, password=SECRET)


@pytest.fixture(autouse=True)
def no_password_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET not in caplog.text


def assert_no_secret(exc: BaseException) -> None:
    """Check the message of `exc` and of every exception in its chain."""
    seen: BaseException | None = exc
    while seen is not None:
        assert SECRET not in str(seen), type(seen)
        assert SECRET not in repr(seen), type(seen)
        seen = seen.__cause__ or seen.__context__


# -- config -------------------------------------------------------------------

BAD_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("dsn-int", {"dsn": 5432}),
    ("dsn-garbage", {"dsn": f"postgresql://user:{SECRET}@[::1"}),
    ("dsn-bad-keyword", {"dsn": f"host=x password={SECRET} bogus_option=1"}),
    ("dsn-bad-port", {"dsn": f"host=127.0.0.1 port=notaport password={SECRET}"}),
    ("schema-injection", {"schema": "pgjobs; DROP SCHEMA public"}),
    ("schema-empty", {"schema": ""}),
    ("schema-long", {"schema": "s" * 100}),
    ("schema-nul", {"schema": "pg\x00jobs"}),
    ("schema-upper", {"schema": "PgJobs"}),
    ("schema-reserved", {"schema": "pg_catalog"}),
    ("schema-surrogate", {"schema": LONE_SURROGATE}),
    ("queue-name-empty", {"queues": {"": pgjobs.queue()}}),
    ("queue-name-long", {"queues": {"q" * 129: pgjobs.queue()}}),
    ("queue-name-injection", {"queues": {INJECTION: pgjobs.queue()}}),
    ("queue-name-nul", {"queues": {"q\x00": pgjobs.queue()}}),
    ("queue-name-surrogate", {"queues": {LONE_SURROGATE: pgjobs.queue()}}),
    ("queue-not-definition", {"queues": {"q": "fast"}}),
    ("queue-options-wrong", {"queues": {"q": {"retry_limit": -1}}}),
    ("queues-not-mapping", {"queues": ["q"]}),
    ("pool-negative", {"pool": {"max_size": -1}}),
    ("pool-nan", {"pool": {"timeout": math.nan}}),
    ("pool-inf", {"pool": {"timeout": math.inf}}),
    ("pool-huge", {"pool": {"max_size": 10**100}}),
    ("worker-string", {"worker": {"polling_interval": "fast"}}),
    ("worker-nan", {"worker": {"heartbeat_interval": math.nan}}),
    (
        "cron-short",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "* * *"}},
        },
    ),
    (
        "cron-range",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "99 * * * *"}},
        },
    ),
    (
        "cron-nul",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "* * * * *\x00"}},
        },
    ),
    (
        "cron-zone",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {
                "s": {"queue": "q", "cron": "* * * * *", "timezone": "Mars/Olympus"}
            },
        },
    ),
    (
        "cron-unknown-queue",
        {"schedules": {"s": {"queue": "nope", "cron": "* * * * *"}}},
    ),
    ("typo-key", {"dns": "postgresql://x"}),
    ("on-error-not-callable", {"on_error": "log it"}),
    ("payload-limit-negative", {"max_payload_bytes": -1}),
    ("deeply-nested", {"queues": nested(200)}),
]


@pytest.mark.parametrize(
    ("overrides"), [row[1] for row in BAD_CONFIGS], ids=[row[0] for row in BAD_CONFIGS]
)
def test_hostile_config_rejected(overrides: dict[str, Any]) -> None:
    config = {"dsn": f"postgresql://app:{SECRET}@127.0.0.1:5432/app", **overrides}
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.create_job_system(config)
    assert_no_secret(caught.value)


@pytest.mark.parametrize(
    "config", ["postgresql://x", None, ["dsn"], 42], ids=["str", "none", "list", "int"]
)
def test_hostile_config_not_mapping(config: Any) -> None:
    with pytest.raises(pgjobs.ConfigError):
        pgjobs.create_job_system(config)


UNREACHABLE = [
    ("closed-port", f"postgresql://app:{SECRET}@127.0.0.1:1/app"),
    ("unknown-database", "DATABASE"),
]


@pytest.mark.parametrize(
    "target", [row[1] for row in UNREACHABLE], ids=[row[0] for row in UNREACHABLE]
)
async def test_hostile_dsn_fails_at_start(target: str, secret_dsn: str) -> None:
    if target == "DATABASE":
        target = psycopg.conninfo.make_conninfo(secret_dsn, dbname="no_such_db_x")
    jobs = pgjobs.create_job_system({"dsn": target, "queues": {"q": pgjobs.queue()}})
    try:
        with pytest.raises(pgjobs.DatabaseUnavailable) as caught:
            await jobs.send("q", {})
    finally:
        await jobs.stop()
    assert_no_secret(caught.value)
    assert SECRET not in repr(jobs)


# -- send ---------------------------------------------------------------------

NOW = datetime.datetime.now(datetime.UTC)
BAD_SENDS: list[tuple[str, Any, Any, dict[str, Any], type[Exception]]] = [
    ("queue-unknown", "missing", {}, {}, pgjobs.QueueNotFound),
    ("queue-injection", INJECTION, {}, {}, pgjobs.QueueNotFound),
    ("queue-int", 5, {}, {}, pgjobs.QueueNotFound),
    ("queue-none", None, {}, {}, pgjobs.QueueNotFound),
    ("queue-nul", "plain\x00", {}, {}, pgjobs.QueueNotFound),
    ("payload-str", "plain", "hello", {}, pgjobs.PayloadValidationError),
    ("payload-int", "plain", 7, {}, pgjobs.PayloadValidationError),
    ("payload-list", "plain", [1, 2], {}, pgjobs.PayloadValidationError),
    ("payload-nul", "plain", {"a": "x\x00y"}, {}, pgjobs.PayloadValidationError),
    ("payload-nul-key", "plain", {"\x00": 1}, {}, pgjobs.PayloadValidationError),
    (
        "payload-surrogate",
        "plain",
        {"a": LONE_SURROGATE},
        {},
        pgjobs.PayloadValidationError,
    ),
    ("payload-nan", "plain", {"a": math.nan}, {}, pgjobs.PayloadValidationError),
    ("payload-inf", "plain", {"a": -math.inf}, {}, pgjobs.PayloadValidationError),
    ("payload-deep", "plain", nested(500), {}, pgjobs.PayloadValidationError),
    (
        "payload-huge",
        "plain",
        {"a": "x" * 2_000_000},
        {},
        pgjobs.PayloadValidationError,
    ),
    ("payload-int-key", "plain", {1: "a"}, {}, pgjobs.PayloadValidationError),
    ("payload-object", "plain", {"a": object()}, {}, pgjobs.PayloadValidationError),
    (
        "model-wrong-type",
        "typed",
        {"to": 5, "retries": "many"},
        {},
        pgjobs.PayloadValidationError,
    ),
    ("model-missing", "typed", {}, {}, pgjobs.PayloadValidationError),
    ("model-nul", "typed", {"to": "a\x00@b"}, {}, pgjobs.PayloadValidationError),
    (
        "model-surrogate",
        "typed",
        {"to": LONE_SURROGATE},
        {},
        pgjobs.PayloadValidationError,
    ),
    ("delay-negative", "plain", {}, {"delay": -1}, SendOptionError),
    ("delay-nan", "plain", {}, {"delay": math.nan}, SendOptionError),
    ("delay-inf", "plain", {}, {"delay": math.inf}, SendOptionError),
    ("delay-str", "plain", {}, {"delay": "5"}, SendOptionError),
    ("delay-huge", "plain", {}, {"delay": 10**20}, SendOptionError),
    ("delay-and-run-at", "plain", {}, {"delay": 1, "run_at": NOW}, SendOptionError),
    (
        "run-at-naive",
        "plain",
        {},
        {"run_at": datetime.datetime(2030, 1, 1)},
        SendOptionError,
    ),
    ("run-at-str", "plain", {}, {"run_at": "tomorrow"}, SendOptionError),
    ("priority-str", "plain", {}, {"priority": "high"}, SendOptionError),
    ("priority-bool", "plain", {}, {"priority": True}, SendOptionError),
    ("priority-huge", "plain", {}, {"priority": 2**40}, SendOptionError),
    ("priority-float", "plain", {}, {"priority": 1.5}, SendOptionError),
    ("singleton-empty", "plain", {}, {"singleton_key": ""}, SendOptionError),
    ("singleton-long", "plain", {}, {"singleton_key": "k" * 1000}, SendOptionError),
    ("singleton-nul", "plain", {}, {"singleton_key": "k\x00"}, SendOptionError),
    ("singleton-int", "plain", {}, {"singleton_key": 5}, SendOptionError),
    (
        "singleton-surrogate",
        "plain",
        {},
        {"singleton_key": LONE_SURROGATE},
        SendOptionError,
    ),
    ("lock-nul", "plain", {}, {"lock": "\x00"}, SendOptionError),
    ("lock-surrogate", "plain", {}, {"lock": LONE_SURROGATE}, SendOptionError),
]


@pytest.fixture
async def systems(secret_dsn: str) -> AsyncIterator[Callable[..., pgjobs.JobSystem]]:
    """Factory of job systems on the test database's dsn with a password."""
    created: list[pgjobs.JobSystem] = []

    def make(**overrides: Any) -> pgjobs.JobSystem:
        system = pgjobs.create_job_system(build_config(secret_dsn, **overrides))
        created.append(system)
        return system

    yield make
    for system in created:
        await system.stop()


@pytest.fixture
def sender(systems: Callable[..., pgjobs.JobSystem]) -> pgjobs.JobSystem:
    """A job system with a plain queue and a queue with a payload model."""
    return systems(queues={"plain": pgjobs.queue(), "typed": pgjobs.queue(Email)})


@pytest.mark.parametrize(
    ("queue", "payload", "options", "error"),
    [row[1:] for row in BAD_SENDS],
    ids=[row[0] for row in BAD_SENDS],
)
async def test_hostile_send_rejected(
    sender: pgjobs.JobSystem,
    query: Any,
    queue: Any,
    payload: Any,
    options: dict[str, Any],
    error: type[Exception],
) -> None:
    await sender.get_app()
    with pytest.raises(error) as caught:
        await sender.send(queue, payload, **options)
    assert_no_secret(caught.value)
    with pytest.raises(error):
        await _send_sync_in_thread(sender, queue, payload, options)
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]


async def _send_sync_in_thread(
    sender: pgjobs.JobSystem, queue: Any, payload: Any, options: dict[str, Any]
) -> Any:
    return await asyncio.to_thread(lambda: sender.send_sync(queue, payload, **options))


BAD_BATCHES: list[tuple[str, Any]] = [
    ("not-a-list", "abc"),
    ("mapping", {"a": 1}),
    ("one-bad-among-good", [{"n": 1}, {"n": 2}, {"n": "x\x00"}, {"n": 4}]),
    ("one-nan-among-good", [{"n": 1}, {"n": math.nan}]),
]


@pytest.mark.parametrize(
    "payloads", [row[1] for row in BAD_BATCHES], ids=[row[0] for row in BAD_BATCHES]
)
async def test_hostile_send_many_writes_nothing(
    sender: pgjobs.JobSystem, query: Any, payloads: Any
) -> None:
    with pytest.raises(pgjobs.PgJobsError):
        await sender.send_many("plain", payloads)
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]


# -- handlers -----------------------------------------------------------------


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def _returns(value: Any) -> Callable[[Any], Any]:
    def handler(payload: Any) -> Any:
        return value

    return handler


def _raises(exc: BaseException) -> Callable[[Any], Any]:
    def handler(payload: Any) -> Any:
        raise exc

    return handler


class _Opaque:
    pass


BAD_HANDLERS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("returns-object", _returns(_Opaque()), "succeeded"),
    ("returns-nan", _returns({"a": math.nan}), "succeeded"),
    ("returns-nul", _returns({"a": "x\x00"}), "succeeded"),
    ("returns-surrogate", _returns(LONE_SURROGATE), "succeeded"),
    ("returns-deep", _returns(nested(500)), "succeeded"),
    ("returns-huge", _returns("x" * 5_000_000), "succeeded"),
    ("returns-set", _returns({1, 2}), "succeeded"),
    ("raises-nul", _raises(ValueError("bad\x00message")), "failed"),
    ("raises-surrogate", _raises(ValueError(LONE_SURROGATE)), "failed"),
    ("raises-huge", _raises(ValueError("e" * 1_000_000)), "failed"),
    ("raises-unprintable", _raises(UnprintableError()), "failed"),
    ("raises-system-exit", _raises(SystemExit(3)), "failed"),
    ("raises-keyboard-interrupt", _raises(KeyboardInterrupt()), "failed"),
]


@pytest.mark.parametrize(
    ("handler", "status"),
    [row[1:] for row in BAD_HANDLERS],
    ids=[row[0] for row in BAD_HANDLERS],
)
async def test_hostile_handler_outcome_stored(
    systems: Callable[..., pgjobs.JobSystem],
    query: Any,
    handler: Callable[[Any], Any],
    status: str,
) -> None:
    healthy: list[Any] = []
    jobs = systems(
        queues={"bad": pgjobs.queue(retry_limit=0), "good": pgjobs.queue()},
    )
    await jobs.init_jobs({"bad": handler, "good": healthy.append})
    bad_id = await jobs.send("bad", {})

    def final() -> Any:
        rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", bad_id)
        return rows and rows[0][0] in ("succeeded", "failed")

    await wait_for(final, timeout=60)
    assert query("SELECT status FROM procrastinate_jobs WHERE id = %s", bad_id) == [
        (status,)
    ]
    # The worker keeps running: a healthy job sent afterwards runs.
    await jobs.send("good", {"after": True})
    await wait_for(lambda: healthy == [{"after": True}], timeout=60)
    assert jobs.workers is not None
    assert jobs.workers.running


# -- dashboard ----------------------------------------------------------------

BAD_DASHBOARD_CALLS: list[tuple[str, str, dict[str, Any], type[Exception]]] = [
    ("page-zero", "get_recent_jobs", {"page": 0}, DashboardQueryError),
    ("page-negative", "get_recent_jobs", {"page": -1}, DashboardQueryError),
    ("page-huge", "get_recent_jobs", {"page": 10**12}, DashboardQueryError),
    (
        "page-bigger-than-bigint",
        "get_recent_jobs",
        {"page": 2**70},
        DashboardQueryError,
    ),
    ("page-str", "get_recent_jobs", {"page": "1"}, DashboardQueryError),
    ("page-float", "get_recent_jobs", {"page": 1.5}, DashboardQueryError),
    ("page-nan", "get_recent_jobs", {"page": math.nan}, DashboardQueryError),
    ("page-bool", "get_recent_jobs", {"page": True}, DashboardQueryError),
    ("per-page-zero", "get_recent_jobs", {"per_page": 0}, DashboardQueryError),
    ("per-page-huge", "get_recent_jobs", {"per_page": 10**9}, DashboardQueryError),
    ("state-unknown", "get_recent_jobs", {"state": "exploded"}, DashboardQueryError),
    ("state-injection", "get_recent_jobs", {"state": INJECTION}, DashboardQueryError),
    ("cursor-forged", "get_recent_jobs", {"cursor": "forged"}, DashboardQueryError),
    ("cursor-injection", "get_recent_jobs", {"cursor": INJECTION}, DashboardQueryError),
    ("cursor-int", "get_recent_jobs", {"cursor": 5}, DashboardQueryError),
    ("search-nul", "get_recent_jobs", {"search": "a\x00b"}, DashboardQueryError),
    (
        "search-surrogate",
        "get_recent_jobs",
        {"search": LONE_SURROGATE},
        DashboardQueryError,
    ),
    ("search-huge", "get_recent_jobs", {"search": "x" * 10_000}, DashboardQueryError),
    (
        "queue-surrogate",
        "get_recent_jobs",
        {"queue": LONE_SURROGATE},
        DashboardQueryError,
    ),
    ("queue-int", "get_recent_jobs", {"queue": 5}, DashboardQueryError),
    ("id-str", "get_job_by_id", {"job_id": "1"}, DashboardQueryError),
    ("id-float", "get_job_by_id", {"job_id": 1.0}, DashboardQueryError),
    ("id-none", "get_job_by_id", {"job_id": None}, DashboardQueryError),
    ("rerun-unknown", "rerun_job", {"job_id": 987_654_321}, pgjobs.JobNotFound),
    ("rerun-negative", "rerun_job", {"job_id": -1}, pgjobs.JobNotFound),
    ("rerun-huge", "rerun_job", {"job_id": 2**80}, pgjobs.JobNotFound),
    ("rerun-str", "rerun_job", {"job_id": "1; DROP"}, DashboardQueryError),
    ("cancel-unknown", "cancel_job", {"job_id": 987_654_321}, pgjobs.JobNotFound),
    ("cancel-zero", "cancel_job", {"job_id": 0}, pgjobs.JobNotFound),
    ("prune-negative", "prune", {"older_than": -5}, DashboardQueryError),
    ("prune-nan", "prune", {"older_than": math.nan}, DashboardQueryError),
    (
        "prune-active-state",
        "prune",
        {"older_than": 0, "states": ["doing"]},
        DashboardQueryError,
    ),
]

# Text filters that are valid but hostile: they must match nothing, not fail.
ODD_SEARCHES = ["%", "_", "\\", "'", INJECTION, "x" * 500, "*", "[a-", "😀"]


@pytest.mark.parametrize(
    ("method", "kwargs", "error"),
    [row[1:] for row in BAD_DASHBOARD_CALLS],
    ids=[row[0] for row in BAD_DASHBOARD_CALLS],
)
async def test_hostile_dashboard_rejected(
    sender: pgjobs.JobSystem,
    query: Any,
    method: str,
    kwargs: dict[str, Any],
    error: type[Exception],
) -> None:
    job_id = await sender.send("plain", {"n": 1})
    dashboard = sender.dashboard
    with pytest.raises(error) as caught:
        await getattr(dashboard, method)(**kwargs)
    assert_no_secret(caught.value)
    assert query("SELECT id, status FROM procrastinate_jobs") == [(job_id, "todo")]


async def test_hostile_dashboard_odd_search_matches_nothing(
    sender: pgjobs.JobSystem, query: Any
) -> None:
    await sender.send("plain", {"n": 1})
    for text in ODD_SEARCHES:
        page = await sender.dashboard.get_recent_jobs(search=text, queue=text)
        assert page.jobs == [], text
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(1,)]


async def test_hostile_dashboard_rerun_waiting_job(
    sender: pgjobs.JobSystem, query: Any
) -> None:
    job_id = await sender.send("plain", {"n": 1})
    assert job_id is not None
    with pytest.raises(pgjobs.JobStateError):
        await sender.dashboard.rerun_job(job_id)
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(1,)]


# -- command line --------------------------------------------------------------

BAD_COMMANDS: list[tuple[str, list[str], int]] = [
    ("show-text-id", ["show", "abc"], 2),
    ("show-negative-id", ["show", "-1"], 2),
    ("show-huge-id", ["show", "9" * 40], 1),
    ("show-unknown-id", ["show", "987654321"], 1),
    ("rerun-unknown-id", ["rerun", "987654321"], 1),
    ("cancel-unknown-id", ["cancel", "987654321"], 1),
    ("jobs-page-negative", ["jobs", "--page", "-1"], 2),
    ("jobs-page-text", ["jobs", "--page", "many"], 2),
    ("jobs-state-unknown", ["jobs", "--state", "exploded"], 2),
    ("jobs-cursor-forged", ["jobs", "--cursor", INJECTION], 1),
    ("prune-age-text", ["prune", "--older-than", "soon"], 2),
    ("unknown-command", ["explode"], 2),
    ("app-missing-module", ["--app", "no_such_module:jobs", "stats"], 1),
    ("app-missing-attribute", ["--app", "tests.faults.app:nothing", "stats"], 1),
    ("app-not-a-system", ["--app", "os:getcwd", "stats"], 1),
    ("app-malformed", ["--app", ":::", "stats"], 1),
    ("worker-missing-module", ["worker", "no_such_module:jobs"], 1),
]


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [row[1:] for row in BAD_COMMANDS],
    ids=[row[0] for row in BAD_COMMANDS],
)
def test_hostile_cli_rejected(
    secret_dsn: str, query: Any, argv: list[str], exit_code: int
) -> None:
    env = {
        **os.environ,
        "FAULTS_DSN": secret_dsn,
        "FAULTS_CONFIG": json.dumps({"queues": {"plain": {}}}),
        "PGJOBS_APP": "tests.faults.app:jobs",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        "DATABASE_URL": secret_dsn,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pgjobs", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()
    assert SECRET not in result.stderr + result.stdout
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]


# -- admin page ---------------------------------------------------------------


@pytest.fixture
async def admin(sender: pgjobs.JobSystem) -> Any:
    app = create_admin_app(
        sender, authorize=lambda request: True, secret_key="k" * 32, csrf_max_age=1
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://admin.test"
    ) as client:
        yield client


def _token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


async def _finished_job(sender: pgjobs.JobSystem, query: Any) -> int:
    job_id = await sender.send("plain", {"n": 1})
    assert job_id is not None
    query("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", job_id)
    return job_id


BAD_POSTS = ["missing", "empty", "forged", "other-session", "expired", "injection"]


@pytest.mark.parametrize("case", BAD_POSTS)
async def test_hostile_admin_csrf_rejected(
    admin: Any, sender: pgjobs.JobSystem, query: Any, case: str
) -> None:
    job_id = await _finished_job(sender, query)
    page = await admin.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    token = _token(page.text)
    data: dict[str, str] = {"csrf_token": token}
    if case == "missing":
        data = {}
    elif case == "empty":
        data = {"csrf_token": ""}
    elif case == "forged":
        data = {"csrf_token": token[:-4] + "AAAA"}
    elif case == "other-session":
        admin.cookies.clear()
    elif case == "expired":
        await asyncio.sleep(2.5)
    elif case == "injection":
        data = {"csrf_token": INJECTION}

    for action in ("rerun", "cancel"):
        response = await admin.post(f"/jobs/{job_id}/{action}", data=data)
        assert response.status_code == 403, (action, response.text[:300])
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(1,)]


BAD_PATHS = [
    ("/jobs/987654321", 404),
    ("/jobs/abc", 404),
    ("/jobs/-1", 404),
    ("/jobs/" + "9" * 40, 404),
    ("/jobs?page=-1", 400),
    ("/jobs?page=abc", 400),
    ("/jobs?per_page=100000000", 400),
    ("/jobs?state=exploded", 400),
    ("/jobs?cursor=forged", 400),
    ("/jobs?search=%00", 400),
    ("/nope", 404),
]


@pytest.mark.parametrize(("path", "status"), BAD_PATHS, ids=[p for p, _ in BAD_PATHS])
async def test_hostile_admin_paths(admin: Any, path: str, status: int) -> None:
    response = await admin.get(path)
    assert response.status_code == status, response.text[:300]
    assert SECRET not in response.text


async def test_hostile_admin_post_unknown_job(admin: Any, query: Any) -> None:
    page = await admin.get("/jobs")
    token = _token(page.text) if "csrf_token" in page.text else "none"
    response = await admin.post("/jobs/987654321/rerun", data={"csrf_token": token})
    assert response.status_code in (403, 404)
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]

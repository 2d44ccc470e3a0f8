"""The framework examples, run against a real database.

Each test imports an example the way its README runs it (environment
variables first), sends a job through the app and waits until a worker has
processed it. The Django example runs in a child process because Django can
be set up only once per process.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "example-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMAIL = {"to": "ada@example.com", "subject": "Welcome"}

Query = Callable[..., list[tuple[Any, ...]]]


def import_example(
    module: str, monkeypatch: pytest.MonkeyPatch, **environment: str
) -> ModuleType:
    """Import an example module afresh, with `environment` set first."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    package = module.partition(".")[0]
    for name in list(sys.modules):
        if name == package or name.startswith(package + "."):
            monkeypatch.delitem(sys.modules, name)
    return importlib.import_module(module)


def job_status(query: Query, job_id: int) -> str | None:
    rows = query("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


@asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


# -- FastAPI -----------------------------------------------------------------


async def test_fastapi_example_processes_job(
    dsn: str, monkeypatch: pytest.MonkeyPatch, query: Query
) -> None:
    main = import_example(
        "fastapi_app.main",
        monkeypatch,
        DATABASE_URL=dsn,
        ENABLE_WORKER="true",
        ADMIN_TOKEN=TOKEN,
    )
    async with (
        main.app.router.lifespan_context(main.app),
        asgi_client(main.app) as client,
    ):
        sent = await client.post("/emails", json=EMAIL)
        job_id = sent.json()["job_id"]
        await wait_for(lambda: job_status(query, job_id) == "succeeded")
        admin = await client.get("/admin/", headers=AUTH)
        detail = await client.get(f"/admin/jobs/{job_id}", headers=AUTH)

    assert sent.status_code == 202
    assert admin.status_code == 200
    assert "emails" in admin.text
    assert detail.status_code == 200
    assert "ada@example.com" in detail.text
    assert 'href="/admin/jobs?queue=emails"' in detail.text


async def test_fastapi_example_admin_needs_token(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = import_example(
        "fastapi_app.main", monkeypatch, DATABASE_URL=dsn, ADMIN_TOKEN=TOKEN
    )
    async with asgi_client(main.app) as client:
        missing = await client.get("/admin/")
        wrong = await client.get("/admin/", headers={"Authorization": "Bearer no"})
    await main.jobs.stop()

    assert missing.status_code == 403
    assert wrong.status_code == 403


async def test_fastapi_example_without_worker_queues(
    dsn: str, monkeypatch: pytest.MonkeyPatch, query: Query
) -> None:
    main = import_example(
        "fastapi_app.main", monkeypatch, DATABASE_URL=dsn, ENABLE_WORKER="false"
    )
    async with (
        main.app.router.lifespan_context(main.app),
        asgi_client(main.app) as client,
    ):
        sent = await client.post("/emails", json=EMAIL)
        workers = main.jobs.workers

    assert sent.status_code == 202
    assert workers is None
    assert job_status(query, sent.json()["job_id"]) == "todo"


# -- Litestar ----------------------------------------------------------------


async def test_litestar_example_processes_job(
    dsn: str, monkeypatch: pytest.MonkeyPatch, query: Query
) -> None:
    from litestar.testing import AsyncTestClient

    main = import_example(
        "litestar_app.main",
        monkeypatch,
        DATABASE_URL=dsn,
        ENABLE_WORKER="true",
        ADMIN_TOKEN=TOKEN,
    )
    async with AsyncTestClient(app=main.app) as client:
        sent = await client.post("/emails", json=EMAIL)
        job_id = sent.json()["job_id"]
        await wait_for(lambda: job_status(query, job_id) == "succeeded")
        denied = await client.get("/admin/")
        admin = await client.get("/admin/", headers=AUTH)
        detail = await client.get(f"/admin/jobs/{job_id}", headers=AUTH)

    assert sent.status_code == 202
    assert denied.status_code == 403
    assert admin.status_code == 200
    assert "ada@example.com" in detail.text
    assert 'href="/admin/jobs?queue=emails"' in detail.text


# -- Flask -------------------------------------------------------------------


def test_flask_example_processes_job(
    dsn: str, monkeypatch: pytest.MonkeyPatch, query: Query
) -> None:
    module = import_example(
        "flask_app.app",
        monkeypatch,
        DATABASE_URL=dsn,
        ENABLE_WORKER="true",
        ADMIN_TOKEN=TOKEN,
    )
    app = module.create_app()
    try:
        client = app.test_client()
        sent = client.post("/emails", json=EMAIL)
        job_id = sent.get_json()["job_id"]
        _wait_sync(lambda: job_status(query, job_id) == "succeeded")
        denied = client.get("/admin/stats")
        stats = client.get("/admin/stats", headers=AUTH)
        listed = client.get("/admin/jobs?queue=emails", headers=AUTH)
        detail = client.get(f"/admin/jobs/{job_id}", headers=AUTH)
        rerun = client.post(f"/admin/jobs/{job_id}/rerun", headers=AUTH)
        invalid = client.post("/emails", json={"to": "ada@example.com"})
    finally:
        module.jobs.stop_sync()

    assert sent.status_code == 202
    assert denied.status_code == 403
    assert stats.status_code == 200
    assert stats.get_json()["totals"]["succeeded"] == 1
    assert [job["id"] for job in listed.get_json()["jobs"]] == [job_id]
    assert detail.get_json()["state"] == "succeeded"
    assert rerun.status_code == 200
    assert rerun.get_json()["job_id"] != job_id
    assert invalid.status_code == 422


def _wait_sync(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll `condition` from sync code; the timeout only bounds a hung test."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


# -- Django ------------------------------------------------------------------

DJANGO_DRIVER = """
import json, os, time
import django
from django.test.utils import setup_test_environment

django.setup()
setup_test_environment()
from django.test import Client
from emails.jobs import jobs

client = Client()
auth = {"HTTP_AUTHORIZATION": "Bearer " + os.environ["ADMIN_TOKEN"]}
sent = client.post("/emails", data=json.dumps(EMAIL), content_type="application/json")
job_id = sent.json()["job_id"]
deadline = time.monotonic() + 30
state = None
while time.monotonic() < deadline:
    state = client.get(f"/admin/jobs/{job_id}", **auth).json()["state"]
    if state == "succeeded":
        break
    time.sleep(0.05)
denied = client.get("/admin/stats")
stats = client.get("/admin/stats", **auth)
jobs.stop_sync()
print(json.dumps({
    "sent_status": sent.status_code,
    "job_id": job_id,
    "state": state,
    "denied_status": denied.status_code,
    "succeeded": stats.json()["totals"]["succeeded"],
}))
"""


def test_django_example_processes_job(dsn: str, query: Query) -> None:
    environment = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ENABLE_WORKER": "true",
        "ADMIN_TOKEN": TOKEN,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    script = f"EMAIL = {EMAIL!r}\n" + DJANGO_DRIVER
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=EXAMPLES / "django_app",
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    assert report["sent_status"] == 202
    assert report["state"] == "succeeded"
    assert report["denied_status"] == 403
    assert report["succeeded"] == 1
    assert job_status(query, report["job_id"]) == "succeeded"


# -- web and worker as separate processes ------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start child processes in examples/; each is stopped after the test."""
    children: list[subprocess.Popen[bytes]] = []

    def start(arguments: list[str], **environment: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"process-{len(children)}.log"
        with log_path.open("wb") as log:
            child = subprocess.Popen(
                arguments,
                cwd=EXAMPLES,
                env={**os.environ, **environment},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


async def test_split_web_and_worker_processes(
    dsn: str,
    query: Query,
    spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    port = _free_port()
    web = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "fastapi_app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        DATABASE_URL=dsn,
        ENABLE_WORKER="false",
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

        async def web_is_up() -> bool:
            try:
                await client.get("/docs")
            except httpx.TransportError:
                return False
            return True

        await wait_for(web_is_up, timeout=60)
        sent = await client.post("/emails", json=EMAIL)
    job_id = sent.json()["job_id"]
    queued = job_status(query, job_id)

    worker = spawn(
        [sys.executable, "-m", "pgjobs", "worker", "fastapi_app.jobs:jobs"],
        DATABASE_URL=dsn,
    )
    await wait_for(lambda: job_status(query, job_id) == "succeeded", timeout=60)
    worker.send_signal(signal.SIGTERM)
    web.send_signal(signal.SIGTERM)
    worker_exit = worker.wait(timeout=60)
    web.wait(timeout=60)

    assert sent.status_code == 202
    assert queued == "todo"
    assert worker_exit == 0, _read_logs(tmp_path)


def _read_logs(folder: Path) -> str:
    return "\n".join(path.read_text() for path in sorted(folder.glob("*.log")))

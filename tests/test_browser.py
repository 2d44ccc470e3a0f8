"""The admin page in a real headless Chromium, served by uvicorn.

Chromium comes from Debian's `chromium` package; Playwright drives it
through `executable_path` and never downloads a browser of its own. The
test also saves the screenshot that the docs show (docs/img/admin.png).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

import pgjobs
from pgjobs.admin import create_admin_app
from tests.conftest import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "admin.png"
TOKEN = "browser-token"

Query = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Path of Debian's Chromium, installed with apt-get when missing."""
    if not CHROMIUM.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
        ):
            subprocess.run(command, check=True, capture_output=True, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing and cannot be installed here; run as root "
            "with apt-get, or `apt-get install chromium chromium-driver`"
        )
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def serve_in_thread() -> Iterator[Callable[[Any], str]]:
    """Serve an ASGI app with uvicorn on a free loopback port; yield its URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)


def fail_on_request(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("fail"):
        raise ValueError(f"mailbox of {payload['to']} is full")
    return {"delivered": True}


def job_status(query: Query, job_id: int) -> str | None:
    rows = query("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


@asynccontextmanager
async def chromium_page(executable: Path, base_url: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(
                base_url=base_url,
                viewport={"width": 1200, "height": 720},
                extra_http_headers={"Authorization": f"Bearer {TOKEN}"},
            )
            yield await context.new_page()
        finally:
            await browser.close()


def screenshot_path(tmp_path: Path) -> Path:
    if not SCREENSHOT.exists() or os.environ.get("PGJOBS_UPDATE_SCREENSHOT") == "1":
        return SCREENSHOT
    return tmp_path / "admin.png"


async def test_browser_admin_workflow(
    chromium: Path,
    make_system: Callable[..., pgjobs.JobSystem],
    query: Query,
    serve_in_thread: Callable[[Any], str],
    tmp_path: Path,
) -> None:
    # Jobs to look at: failures and successes on emails, a queued report.
    sender = make_system(
        queues={
            "emails": pgjobs.queue(retry_limit=1),
            "reports": pgjobs.queue(),
            "thumbnails": pgjobs.queue(),
        }
    )
    handlers = {name: fail_on_request for name in ("emails", "reports", "thumbnails")}
    await sender.init_jobs(handlers, queues=["emails", "thumbnails"])
    failed = await sender.send("emails", {"to": "ada@example.com", "fail": True})
    succeeding = []
    for number in range(6):
        succeeding.append(
            await sender.send("emails", {"to": f"user{number}@example.com"})
        )
        succeeding.append(await sender.send("thumbnails", {"upload": number}))
    queued = await sender.send("reports", {"kind": "weekly"})
    await wait_for(lambda: job_status(query, failed) == "failed")
    await wait_for(
        lambda: all(job_status(query, job) == "succeeded" for job in succeeding)
    )
    await sender.stop()

    # The admin page, mounted under a prefix, on its own job system.
    viewer = make_system(queues=sender.config.queues)

    def allow(request: Any) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def stop_viewer(app: Starlette) -> AsyncIterator[None]:
        yield
        await viewer.stop()

    admin = create_admin_app(viewer, authorize=allow)
    host = Starlette(
        routes=[Mount("/admin", app=admin)],
        lifespan=asynccontextmanager(stop_viewer),
    )
    base_url = serve_in_thread(host)
    await wait_for(lambda: _accepts_connections(base_url), timeout=30)

    async with chromium_page(chromium, base_url) as page:
        # Queue statistics.
        await page.goto("/admin/")
        stats_text = await page.inner_text("main")
        failed_link = page.locator('a[href="/admin/jobs?queue=emails&state=failed"]')
        failed_count = await failed_link.inner_text()

        # Filter the job list down to the failed jobs, then open the failure.
        await page.goto("/admin/jobs")
        await page.select_option('select[name="state"]', "failed")
        await page.click('button[type="submit"]')
        filtered_url = page.url
        filtered_rows = await page.locator("tbody tr").count()
        await page.click(f'a[href="/admin/jobs/{failed}"]')
        detail_text = await page.inner_text("main")

        # Rerun it: the redirect lands on the new job with a confirmation.
        await page.click('button:has-text("Rerun")')
        rerun_flash = await page.inner_text(".flash")
        rerun_url = page.url

        # Cancel the queued report.
        await page.goto(f"/admin/jobs/{queued}")
        await page.click('button:has-text("Cancel")')
        cancel_flash = await page.inner_text(".flash")
        cancelled_state = await page.inner_text("h1 .state")

        # A POST without a token, or with a forged one, is rejected.
        missing = await page.request.post(f"/admin/jobs/{failed}/rerun", form={})
        forged = await page.request.post(
            f"/admin/jobs/{failed}/rerun", form={"csrf_token": "forged.token"}
        )

        # The picture for the docs: the job list.
        await page.goto("/admin/jobs")
        picture = screenshot_path(tmp_path)
        picture.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(picture), full_page=True)

    assert "emails" in stats_text
    assert "reports" in stats_text
    assert "Oldest ready" in stats_text
    assert failed_count == "1"
    assert "state=failed" in filtered_url
    assert filtered_rows == 1
    assert "mailbox of ada@example.com is full" in detail_text
    assert "ValueError" in detail_text
    assert f"Job {failed} queued again as job" in rerun_flash
    assert rerun_url != f"{base_url}/admin/jobs/{failed}"
    assert f"Job {queued} cancelled." in cancel_flash
    assert cancelled_state == "Cancelled"
    assert job_status(query, queued) == "cancelled"
    assert missing.status == 403
    assert forged.status == 403
    assert picture.stat().st_size > 0


def _accepts_connections(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False

"""Litestar example: send jobs from a handler, run workers in the lifespan.

With ENABLE_WORKER=true the web process also runs the workers; in
production set it to false and run `pgjobs worker litestar_app.jobs:jobs`
as separate processes. The admin page is mounted at /admin and serves only
requests with `Authorization: Bearer $ADMIN_TOKEN`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from litestar import Litestar, asgi, post
from litestar.params import Body
from litestar.types import Receive, Scope, Send
from starlette.requests import Request

from litestar_app.jobs import EMAILS, Email, jobs
from pgjobs.admin import create_admin_app

ENABLE_WORKER = os.environ.get("ENABLE_WORKER", "false").lower() == "true"
ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")
ADMIN_PATH = "/admin"


@asynccontextmanager
async def job_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Start the workers with the app when enabled; stop everything after."""
    if ENABLE_WORKER:
        await jobs.init_jobs()
    try:
        yield
    finally:
        await jobs.stop()


@post("/emails", status_code=202)
async def send_email(data: Annotated[Email, Body()]) -> dict[str, int | None]:
    """Enqueue an e-mail and return the job id."""
    job_id = await jobs.send(EMAILS, data)
    return {"job_id": job_id}


def has_admin_token(request: Request) -> bool:
    """Allow the request when it carries the admin token; with none set, deny."""
    if not ADMIN_TOKEN:
        return False
    supplied = request.headers.get("authorization", "").encode()
    return secrets.compare_digest(supplied, f"Bearer {ADMIN_TOKEN}".encode())


admin_app = create_admin_app(
    jobs, authorize=has_admin_token, secret_key=os.environ.get("ADMIN_SECRET_KEY")
)


@asgi(ADMIN_PATH, is_mount=True, copy_scope=True)
async def admin(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve the admin page under ADMIN_PATH.

    Litestar passes a mounted app the path without the mount prefix, with a
    trailing slash added, and no root_path. The admin page builds its links
    from root_path, so the standard ASGI layout is restored first.
    """
    path = scope["path"].rstrip("/") or "/"
    scope["root_path"] = scope.get("root_path", "") + ADMIN_PATH
    scope["path"] = scope["root_path"] + path
    await admin_app(scope, receive, send)  # type: ignore[arg-type]


app = Litestar(route_handlers=[send_email, admin], lifespan=[job_lifespan])

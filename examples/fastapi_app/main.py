"""FastAPI example: send jobs from an endpoint, run workers in the lifespan.

With ENABLE_WORKER=true the web process also runs the workers, which suits
development. In production set it to false and run `pgjobs worker
fastapi_app.jobs:jobs` as separate processes. The admin page is mounted at
/admin and serves only requests with `Authorization: Bearer $ADMIN_TOKEN`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from fastapi_app.jobs import EMAILS, Email, jobs
from pgjobs.admin import create_admin_app

ENABLE_WORKER = os.environ.get("ENABLE_WORKER", "false").lower() == "true"
ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the workers with the app when enabled; stop everything after."""
    if ENABLE_WORKER:
        await jobs.init_jobs()
    try:
        yield
    finally:
        await jobs.stop()


app = FastAPI(lifespan=lifespan)


@app.post("/emails", status_code=202)
async def send_email(email: Email) -> dict[str, int | None]:
    """Enqueue an e-mail and return the job id."""
    job_id = await jobs.send(EMAILS, email)
    return {"job_id": job_id}


def has_admin_token(request: Request) -> bool:
    """Allow the request when it carries the admin token; with none set, deny."""
    if not ADMIN_TOKEN:
        return False
    supplied = request.headers.get("authorization", "").encode()
    return secrets.compare_digest(supplied, f"Bearer {ADMIN_TOKEN}".encode())


app.mount(
    "/admin",
    create_admin_app(
        jobs,
        authorize=has_admin_token,
        secret_key=os.environ.get("ADMIN_SECRET_KEY"),
    ),
)

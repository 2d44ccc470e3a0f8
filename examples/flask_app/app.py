"""Flask example: sync views that send jobs and wrap the sync dashboard.

`create_app()` starts the workers on a background thread when
ENABLE_WORKER=true; in production set it to false and run `pgjobs worker
flask_app.jobs:jobs` as separate processes. The /admin routes return JSON
and answer only requests with `Authorization: Bearer $ADMIN_TOKEN`.
"""

from __future__ import annotations

import atexit
import os
import secrets
from typing import Any

from flask import Blueprint, Flask, abort, request

import pgjobs
from flask_app.jobs import EMAILS, jobs
from pgjobs.dashboard import DashboardQueryError

admin = Blueprint("admin", __name__, url_prefix="/admin")


@admin.before_request
def check_admin_token() -> None:
    """Reject the request with 403 unless it carries the admin token."""
    token = os.environ.get("ADMIN_TOKEN", "")
    supplied = request.headers.get("Authorization", "").encode()
    if not token or not secrets.compare_digest(supplied, f"Bearer {token}".encode()):
        abort(403)


@admin.get("/stats")
def stats() -> dict[str, Any]:
    """Return job counts per queue and state."""
    return jobs.dashboard_sync.get_stats().model_dump(mode="json")


@admin.get("/jobs")
def job_list() -> dict[str, Any]:
    """Return one page of jobs; filters: queue, state, search, page, cursor."""
    page = jobs.dashboard_sync.get_recent_jobs(
        page=request.args.get("page", 1, type=int),
        per_page=request.args.get("per_page", 50, type=int),
        queue=request.args.get("queue") or None,
        state=request.args.get("state") or None,  # type: ignore[arg-type]
        search=request.args.get("search") or None,
        cursor=request.args.get("cursor") or None,
    )
    return page.model_dump(mode="json")


@admin.get("/jobs/<int:job_id>")
def job_detail(job_id: int) -> dict[str, Any]:
    """Return one job with its timeline and attempts."""
    job = jobs.dashboard_sync.get_job_by_id(job_id)
    if job is None:
        abort(404)
    return job.model_dump(mode="json")


@admin.post("/jobs/<int:job_id>/rerun")
def rerun(job_id: int) -> dict[str, Any]:
    """Enqueue a copy of a finished job."""
    return jobs.dashboard_sync.rerun_job(job_id).model_dump(mode="json")


@admin.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> dict[str, Any]:
    """Cancel a waiting job or request the abort of a running one."""
    return jobs.dashboard_sync.cancel_job(job_id).model_dump(mode="json")


@admin.errorhandler(DashboardQueryError)
def invalid_query(exc: DashboardQueryError) -> tuple[dict[str, str], int]:
    return {"error": str(exc)}, 400


@admin.errorhandler(pgjobs.JobNotFound)
def job_not_found(exc: pgjobs.JobNotFound) -> tuple[dict[str, str], int]:
    return {"error": str(exc)}, 404


@admin.errorhandler(pgjobs.JobStateError)
def job_state_conflict(exc: pgjobs.JobStateError) -> tuple[dict[str, str], int]:
    return {"error": str(exc)}, 409


def create_app() -> Flask:
    """Build the Flask app and, with ENABLE_WORKER=true, start the workers."""
    app = Flask(__name__)
    app.register_blueprint(admin)

    @app.post("/emails")
    def send_email() -> tuple[dict[str, Any], int]:
        try:
            job_id = jobs.send_sync(EMAILS, request.get_json(force=True))
        except pgjobs.PayloadValidationError as exc:
            return {"error": str(exc)}, 422
        return {"job_id": job_id}, 202

    if os.environ.get("ENABLE_WORKER", "false").lower() == "true":
        jobs.init_jobs_sync()
        atexit.register(jobs.stop_sync)
    return app

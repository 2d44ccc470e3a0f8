"""The admin pages: statistics, job list, job detail, actions and metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.templating import Jinja2Templates

from pgjobs._masking import mask_payload
from pgjobs.admin import _format
from pgjobs.admin._metrics import CONTENT_TYPE, render_metrics
from pgjobs.admin._security import (
    CSRF_FIELD,
    CsrfProtection,
    FlashLevel,
)
from pgjobs.dashboard import (
    FINISHED_STATES,
    JOB_STATES,
    DashboardQueryError,
    JobState,
)
from pgjobs.errors import JobStateError

if TYPE_CHECKING:
    from pgjobs.system import JobSystem

logger = logging.getLogger(__name__)

WAITING_STATES: tuple[JobState, ...] = ("queued", "scheduled", "retrying")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _build_templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pgjobs.admin", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = _format.format_datetime
    environment.filters["age"] = _format.format_age
    environment.filters["state_label"] = _format.state_label
    return Jinja2Templates(env=environment)


class AdminViews:
    """The page handlers, sharing the job system, templates and CSRF keys."""

    def __init__(
        self, jobs: JobSystem, csrf: CsrfProtection, auto_refresh: float | None
    ) -> None:
        self.jobs = jobs
        self.csrf = csrf
        self.auto_refresh = auto_refresh
        self.templates = _build_templates()
        self.router = Router(
            routes=[
                Route("/", self.stats, name="stats"),
                Route("/jobs", self.job_list, name="jobs"),
                Route("/jobs/{job_id:int}", self.job_detail, name="job"),
                Route(
                    "/jobs/{job_id:int}/rerun",
                    self.rerun,
                    methods=["POST"],
                    name="rerun",
                ),
                Route(
                    "/jobs/{job_id:int}/cancel",
                    self.cancel,
                    methods=["POST"],
                    name="cancel",
                ),
                Route("/metrics", self.metrics, name="metrics"),
            ]
        )

    # -- helpers ----------------------------------------------------------

    def path_for(self, request: Request, name: str, **params: Any) -> str:
        """Return the path of a page of this app, under its mount prefix.

        The app's own router resolves the name, so a host route with the same
        name cannot shadow it.
        """
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return root + str(self.router.url_path_for(name, **params))

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status_code: int = 200,
        refresh: bool = False,
    ) -> Response:
        """Render a page with the flash message, CSRF token and navigation."""
        flash = self.csrf.pop_flash(request)

        def url(name: str, **params: Any) -> str:
            return self.path_for(request, name, **params)

        full_context = {
            "flash": flash,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.csrf.token(request),
            "refresh": self.auto_refresh if refresh else None,
            "url": url,
            "states": JOB_STATES,
            **context,
        }
        response = self.templates.TemplateResponse(
            request,
            template,
            full_context,
            status_code=status_code,
            headers=SECURITY_HEADERS,
        )
        self.csrf.set_cookies(request, response, clear_flash=True)
        return response

    def redirect_with_flash(
        self, request: Request, path: str, level: FlashLevel, text: str
    ) -> Response:
        """Redirect after a POST, with a message for the next page."""
        response = RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)
        self.csrf.set_flash(request, response, level, text)
        return response

    async def check_csrf(self, request: Request) -> None:
        """Raise 403 unless the form carries a valid token for this session."""
        form = await request.form()
        token = form.get(CSRF_FIELD)
        if not isinstance(token, str) or not self.csrf.is_valid(request, token):
            logger.warning(
                "Admin page rejected a POST to %s: CSRF token missing, invalid "
                "or expired",
                request.url.path,
                extra={"action": "admin_csrf_rejected"},
            )
            raise HTTPException(
                status_code=403,
                detail=(
                    "the form's CSRF token is missing, invalid or expired; "
                    "reload the page and submit the form again"
                ),
            )

    # -- pages ------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        """Show job counts per queue and the age of the oldest ready job."""
        stats = await self.jobs.dashboard.get_stats()
        return self.render(request, "stats.html", {"stats": stats}, refresh=True)

    async def job_list(self, request: Request) -> Response:
        """Show one page of jobs, filtered by queue, state and search text."""
        filters = _read_filters(request)
        page = _read_int(request, "page", 1)
        per_page = _read_int(request, "per_page", 50)
        cursor = request.query_params.get("cursor") or None
        data = await self.jobs.dashboard.get_data(
            page=page, per_page=per_page, cursor=cursor, **filters
        )

        base = self.path_for(request, "jobs")
        filter_query = {key: value for key, value in filters.items() if value}
        if per_page != 50:
            filter_query["per_page"] = str(per_page)
        links: dict[str, str | None] = {"first": None, "previous": None, "next": None}
        if cursor is not None or data.page.page > 1:
            links["first"] = _with_query(base, filter_query)
        if cursor is None and data.page.page > 1:
            links["previous"] = _with_query(
                base, {**filter_query, "page": data.page.page - 1}
            )
        if data.page.next_cursor is not None:
            links["next"] = _with_query(
                base, {**filter_query, "cursor": data.page.next_cursor}
            )
        elif cursor is None and data.page.page < data.page.pages:
            links["next"] = _with_query(
                base, {**filter_query, "page": data.page.page + 1}
            )

        context = {
            "stats": data.stats,
            "page": data.page,
            "filters": filters,
            "links": links,
            "queue_names": [queue.queue for queue in data.stats.queues],
        }
        return self.render(request, "jobs.html", context, refresh=True)

    async def job_detail(self, request: Request) -> Response:
        """Show one job: payload with secrets masked, timeline and attempts."""
        job_id: int = request.path_params["job_id"]
        job = await self.jobs.dashboard.get_job_by_id(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"job {job_id} not found")

        definition = self.jobs.config.queues.get(job.queue)
        model = definition.payload_model if definition is not None else None
        context = {
            "job": job,
            "payload_json": _pretty_json(mask_payload(job.payload, model)),
            "result_json": None if job.result is None else _pretty_json(job.result),
            "can_rerun": job.state in FINISHED_STATES,
            "can_cancel": job.state in WAITING_STATES,
            "can_abort": job.state == "running" and not job.abort_requested,
            "secrets_unknown": model is None and definition is None,
        }
        return self.render(request, "job.html", context)

    async def rerun(self, request: Request) -> Response:
        """Enqueue a copy of a finished job, then show the new job."""
        await self.check_csrf(request)
        job_id: int = request.path_params["job_id"]
        job_path = self.path_for(request, "job", job_id=job_id)
        try:
            result = await self.jobs.dashboard.rerun_job(job_id)
        except JobStateError as exc:
            return self.redirect_with_flash(request, job_path, "error", str(exc))

        if result.job_id is None:
            text = (
                f"Job {job_id} was not rerun: a job with the same singleton key is "
                "already queued or running."
            )
            return self.redirect_with_flash(request, job_path, "error", text)
        logger.info(
            "Admin page reran job %s as job %s",
            job_id,
            result.job_id,
            extra={"action": "admin_rerun", "job_id": job_id},
        )
        new_job_path = self.path_for(request, "job", job_id=result.job_id)
        text = f"Job {job_id} queued again as job {result.job_id}."
        return self.redirect_with_flash(request, new_job_path, "success", text)

    async def cancel(self, request: Request) -> Response:
        """Cancel a waiting job or request the abort of a running one."""
        await self.check_csrf(request)
        job_id: int = request.path_params["job_id"]
        job_path = self.path_for(request, "job", job_id=job_id)
        try:
            result = await self.jobs.dashboard.cancel_job(job_id)
        except JobStateError as exc:
            return self.redirect_with_flash(request, job_path, "error", str(exc))

        logger.info(
            "Admin page cancel of job %s: %s",
            job_id,
            result.action,
            extra={"action": "admin_cancel", "job_id": job_id},
        )
        if result.action == "cancelled":
            return self.redirect_with_flash(
                request, job_path, "success", f"Job {job_id} cancelled."
            )
        if result.action == "abort_requested":
            text = (
                f"Abort requested for running job {job_id}; it ends as aborted "
                "when its handler stops."
            )
            return self.redirect_with_flash(request, job_path, "success", text)
        text = (
            f"Job {job_id} has already finished ({result.state}); "
            "there is nothing to cancel."
        )
        return self.redirect_with_flash(request, job_path, "error", text)

    async def metrics(self, request: Request) -> Response:
        """Serve the queue statistics in Prometheus text format."""
        stats = await self.jobs.dashboard.get_stats()
        return PlainTextResponse(
            render_metrics(stats),
            media_type=CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    # -- errors -----------------------------------------------------------

    def error_page(self, request: Request, status_code: int, message: str) -> Response:
        """Render an error page with its status code."""
        context = {"status_code": status_code, "message": message}
        return self.render(request, "error.html", context, status_code=status_code)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Render 403, 404 and other HTTP errors as pages."""
        assert isinstance(exc, HTTPException)
        return self.error_page(request, exc.status_code, exc.detail)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """Render an unknown job id as a 404 page."""
        return self.error_page(request, 404, str(exc))

    async def query_error(self, request: Request, exc: Exception) -> Response:
        """Render an invalid filter or page value as a 400 page."""
        return self.error_page(request, 400, str(exc))

    async def database_error(self, request: Request, exc: Exception) -> Response:
        """Render an unreachable database as a 503 page."""
        logger.error(
            "Admin page cannot reach the database: %s",
            exc,
            extra={"action": "admin_database_unavailable"},
        )
        return self.error_page(request, 503, str(exc))


def _read_filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in JOB_STATES:
        raise DashboardQueryError(
            f"state {state!r} is not a job state; use one of {', '.join(JOB_STATES)}",
            argument="state",
            value=state,
        )
    return {
        "queue": params.get("queue") or None,
        "state": state,
        "search": params.get("search") or None,
    }


def _read_int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise DashboardQueryError(
            f"{name} must be a whole number, got {text[:40]!r}",
            argument=name,
            value=text,
        ) from None


def _with_query(path: str, params: Mapping[str, Any]) -> str:
    present = {key: value for key, value in params.items() if value is not None}
    return f"{path}?{urlencode(present)}" if present else path


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)

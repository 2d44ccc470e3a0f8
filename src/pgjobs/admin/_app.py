"""The admin page: a Starlette app over the job system's async dashboard."""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from pgjobs.admin._security import (
    Authorize,
    AuthorizeMiddleware,
    CsrfProtection,
    allow_all,
)
from pgjobs.admin._views import AdminViews
from pgjobs.dashboard import DashboardQueryError
from pgjobs.errors import DatabaseUnavailable, JobNotFound, UsageError

if TYPE_CHECKING:
    from pgjobs.system import JobSystem

logger = logging.getLogger(__name__)


def create_admin_app(
    jobs: JobSystem,
    *,
    authorize: Authorize | None = None,
    insecure_allow_all: bool = False,
    auto_refresh: float | None = None,
    secret_key: str | None = None,
    csrf_max_age: int = 7200,
) -> Starlette:
    """Build the admin page as an ASGI app to mount under any path.

    The app shows queue statistics, a filterable job list and job details,
    offers rerun and cancel buttons, and serves `/metrics` for Prometheus.
    It reads through `jobs.dashboard`, on the job system's own pool.

    Args:
        jobs: the job system to show.
        authorize: called with each request (sync or async); a request is
            served only when it returns True, otherwise the response is 403.
        insecure_allow_all: serve every request without authorization; meant
            for local development only.
        auto_refresh: reload the statistics and job list pages every this
            many seconds (at least 1); None disables it.
        secret_key: key that signs CSRF tokens and flash messages. Pass the
            same key to every web process that serves the page; by default a
            random key is made, valid for this process only.
        csrf_max_age: seconds a page's forms stay valid.

    Returns:
        A Starlette application, e.g. for `app.mount("/admin", admin)`.

    Raises:
        UsageError: no `authorize` callable and no `insecure_allow_all=True`,
            or both, or an invalid `auto_refresh` or `csrf_max_age`.
    """
    guard = _choose_authorize(authorize, insecure_allow_all)
    if auto_refresh is not None and not (
        math.isfinite(auto_refresh) and auto_refresh >= 1
    ):
        raise UsageError(
            f"auto_refresh must be None or at least 1 second, got {auto_refresh!r}"
        )
    if csrf_max_age < 1:
        raise UsageError(
            f"csrf_max_age must be at least 1 second, got {csrf_max_age!r}"
        )

    csrf = CsrfProtection(secret_key or secrets.token_urlsafe(32), max_age=csrf_max_age)
    views = AdminViews(jobs, csrf, auto_refresh)
    app = Starlette(
        routes=views.router.routes,
        middleware=[Middleware(AuthorizeMiddleware, authorize=guard)],
        exception_handlers={
            HTTPException: views.http_error,
            DashboardQueryError: views.query_error,
            JobNotFound: views.not_found,
            DatabaseUnavailable: views.database_error,
        },
    )
    return app


def _choose_authorize(
    authorize: Authorize | None, insecure_allow_all: bool
) -> Authorize:
    if authorize is not None and insecure_allow_all:
        raise UsageError(
            "pass either authorize= or insecure_allow_all=True to create_admin_app, "
            "not both"
        )
    if insecure_allow_all:
        logger.warning(
            "The admin page serves every request: insecure_allow_all=True",
            extra={"action": "admin_insecure"},
        )
        return allow_all
    if authorize is None:
        raise UsageError(
            "create_admin_app needs authorize=, a callable that receives the "
            "request and returns True to allow it (for example a check of the "
            "user's session); pass insecure_allow_all=True only for local "
            "development"
        )
    if not callable(authorize):
        raise UsageError(f"authorize must be callable, got {authorize!r}")
    return authorize

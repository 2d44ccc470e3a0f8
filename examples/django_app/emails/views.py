"""Views: send a job, and JSON admin views over the sync dashboard."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST

import pgjobs
from emails.jobs import EMAILS, jobs
from pgjobs.dashboard import DashboardQueryError

View = Callable[..., HttpResponse]


def admin_view(view: View) -> View:
    """Check the admin token and turn dashboard errors into JSON responses."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        token = os.environ.get("ADMIN_TOKEN", "")
        supplied = request.headers.get("Authorization", "").encode()
        expected = f"Bearer {token}".encode()
        if not token or not secrets.compare_digest(supplied, expected):
            return JsonResponse({"error": "forbidden"}, status=403)
        try:
            return view(request, *args, **kwargs)
        except DashboardQueryError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        except pgjobs.JobNotFound as exc:
            return JsonResponse({"error": str(exc)}, status=404)
        except pgjobs.JobStateError as exc:
            return JsonResponse({"error": str(exc)}, status=409)

    return wrapper


@require_POST
def send_email(request: HttpRequest) -> HttpResponse:
    """Enqueue an e-mail from a JSON body and return the job id."""
    try:
        payload = json.loads(request.body)
        job_id = jobs.send_sync(EMAILS, payload)
    except json.JSONDecodeError:
        return JsonResponse({"error": "the body is not valid JSON"}, status=400)
    except pgjobs.PayloadValidationError as exc:
        return JsonResponse({"error": str(exc)}, status=422)
    return JsonResponse({"job_id": job_id}, status=202)


@require_GET
@admin_view
def stats(request: HttpRequest) -> HttpResponse:
    """Return job counts per queue and state."""
    return JsonResponse(jobs.dashboard_sync.get_stats().model_dump(mode="json"))


def _int_argument(request: HttpRequest, name: str, default: int) -> int:
    text = request.GET.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise DashboardQueryError(
            f"{name} must be a whole number, got {text!r}"
        ) from None


@require_GET
@admin_view
def job_list(request: HttpRequest) -> HttpResponse:
    """Return one page of jobs; filters: queue, state, search, page, cursor."""
    page = jobs.dashboard_sync.get_recent_jobs(
        page=_int_argument(request, "page", 1),
        per_page=_int_argument(request, "per_page", 50),
        queue=request.GET.get("queue") or None,
        state=request.GET.get("state") or None,  # type: ignore[arg-type]
        search=request.GET.get("search") or None,
        cursor=request.GET.get("cursor") or None,
    )
    return JsonResponse(page.model_dump(mode="json"))


@require_GET
@admin_view
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """Return one job with its timeline and attempts."""
    job = jobs.dashboard_sync.get_job_by_id(job_id)
    if job is None:
        raise pgjobs.JobNotFound(job_id)
    return JsonResponse(job.model_dump(mode="json"))


@require_POST
@admin_view
def rerun(request: HttpRequest, job_id: int) -> HttpResponse:
    """Enqueue a copy of a finished job."""
    return JsonResponse(jobs.dashboard_sync.rerun_job(job_id).model_dump(mode="json"))


@require_POST
@admin_view
def cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    """Cancel a waiting job or request the abort of a running one."""
    return JsonResponse(jobs.dashboard_sync.cancel_job(job_id).model_dump(mode="json"))

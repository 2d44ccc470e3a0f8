"""The admin page, served through httpx's ASGI transport on a real database."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import itsdangerous
import pytest
from pydantic import BaseModel, Field, SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

import pgjobs
from pgjobs._masking import MASK, mask_payload
from pgjobs.admin import create_admin_app
from pgjobs.admin._metrics import render_metrics
from pgjobs.dashboard import QueueStats, Stats
from tests.conftest import wait_for

TOKEN = "admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET_KEY = "test-secret-key"
CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')

Query = Callable[..., list[tuple[Any, ...]]]
MakeSystem = Callable[..., pgjobs.JobSystem]


def allow_token(request: Any) -> bool:
    return request.headers.get("authorization") == f"Bearer {TOKEN}"


@asynccontextmanager
async def serve(app: Any, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """Yield a client of `app` that keeps cookies, sending `headers` each time."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={**AUTH, **headers}
    ) as client:
        yield client


def admin_for(jobs: pgjobs.JobSystem, **options: Any) -> Starlette:
    options.setdefault("authorize", allow_token)
    options.setdefault("secret_key", SECRET_KEY)
    return create_admin_app(jobs, **options)


def csrf_token(html: str) -> str:
    match = CSRF_PATTERN.search(html)
    assert match is not None, "no CSRF token in the page"
    return match.group(1)


def job_status(query: Query, job_id: int) -> str | None:
    rows = query("SELECT status::text FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


def fail_on_request(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("fail"):
        raise ValueError(f"cannot deliver to {payload.get('to')}")
    return {"delivered": True}


async def make_jobs(make_system: MakeSystem, query: Query) -> dict[str, Any]:
    """Build a system with one failed, one succeeded and one queued job.

    Workers run for `emails` only, so the `reports` job stays queued.
    """
    jobs = make_system(
        queues={
            "emails": pgjobs.queue(retry_limit=0),
            "reports": pgjobs.queue(),
        }
    )
    handlers = {"emails": fail_on_request, "reports": fail_on_request}
    await jobs.init_jobs(handlers, queues=["emails"])
    failed = await jobs.send("emails", {"to": "ada@example.com", "fail": True})
    succeeded = await jobs.send("emails", {"to": "bob@example.com"})
    queued = await jobs.send("reports", {"kind": "weekly"})
    await wait_for(lambda: job_status(query, failed) == "failed")
    await wait_for(lambda: job_status(query, succeeded) == "succeeded")
    return {"jobs": jobs, "failed": failed, "succeeded": succeeded, "queued": queued}


# -- building the app ----------------------------------------------------------


async def test_create_admin_app_requires_authorize(make_system: MakeSystem) -> None:
    jobs = make_system()
    with pytest.raises(pgjobs.UsageError, match="authorize"):
        create_admin_app(jobs)


async def test_create_admin_app_rejects_both_modes(make_system: MakeSystem) -> None:
    jobs = make_system()
    with pytest.raises(pgjobs.UsageError, match="not both"):
        create_admin_app(jobs, authorize=allow_token, insecure_allow_all=True)


async def test_create_admin_app_rejects_bad_refresh(make_system: MakeSystem) -> None:
    jobs = make_system()
    with pytest.raises(pgjobs.UsageError, match="auto_refresh"):
        create_admin_app(jobs, authorize=allow_token, auto_refresh=0.5)


def test_admin_import_without_extra_names_command() -> None:
    script = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "try:\n"
        "    import pgjobs.admin\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "pip install 'pgjobs-queue[admin]'" in completed.stdout


# -- authorization ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs", "/jobs/1", "/metrics"])
async def test_admin_denies_without_authorization(
    make_system: MakeSystem, path: str
) -> None:
    app = admin_for(make_system())
    async with serve(app, Authorization="Bearer wrong") as client:
        response = await client.get(path)
    assert response.status_code == 403


async def test_admin_accepts_async_authorize(make_system: MakeSystem) -> None:
    async def allow(request: Any) -> bool:
        return request.headers.get("x-staff") == "yes"

    app = admin_for(make_system(), authorize=allow)
    async with serve(app) as client:
        denied = await client.get("/")
        allowed = await client.get("/", headers={"x-staff": "yes"})
    assert denied.status_code == 403
    assert allowed.status_code == 200


async def test_admin_insecure_allow_all_serves(make_system: MakeSystem) -> None:
    app = create_admin_app(make_system(), insecure_allow_all=True)
    async with serve(app) as client:
        response = await client.get("/", headers={"Authorization": ""})
    assert response.status_code == 200


# -- pages -----------------------------------------------------------------------


async def test_admin_stats_page_counts(make_system: MakeSystem, query: Query) -> None:
    data = await make_jobs(make_system, query)
    async with serve(admin_for(data["jobs"])) as client:
        response = await client.get("/")
    html = response.text

    assert response.status_code == 200
    assert "emails" in html
    assert "reports" in html
    assert "Oldest ready" in html
    assert 'href="/jobs?queue=emails&amp;state=failed">1</a>' in html
    assert 'href="/jobs?queue=reports&amp;state=queued">1</a>' in html


async def test_admin_job_list_filters(make_system: MakeSystem, query: Query) -> None:
    data = await make_jobs(make_system, query)
    async with serve(admin_for(data["jobs"])) as client:
        failed = await client.get("/jobs", params={"state": "failed"})
        reports = await client.get("/jobs", params={"queue": "reports"})
        searched = await client.get("/jobs", params={"search": "ada@example.com"})
        everything = await client.get("/jobs")

    assert f'href="/jobs/{data["failed"]}"' in failed.text
    assert f'href="/jobs/{data["succeeded"]}"' not in failed.text
    assert f'href="/jobs/{data["queued"]}"' in reports.text
    assert f'href="/jobs/{data["failed"]}"' not in reports.text
    assert f'href="/jobs/{data["failed"]}"' in searched.text
    assert f'href="/jobs/{data["succeeded"]}"' not in searched.text
    for key in ("failed", "succeeded", "queued"):
        assert f'href="/jobs/{data[key]}"' in everything.text


async def test_admin_job_list_paginates(make_system: MakeSystem) -> None:
    jobs = make_system(queues={"bulk": pgjobs.queue()})
    ids = await jobs.send_many("bulk", [{"n": n} for n in range(5)])
    async with serve(admin_for(jobs)) as client:
        first = await client.get("/jobs", params={"per_page": 2})
        next_link = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert next_link is not None
        second = await client.get(next_link.group(1).replace("&amp;", "&"))

    assert f'href="/jobs/{ids[4]}"' in first.text
    assert f'href="/jobs/{ids[2]}"' not in first.text
    assert f'href="/jobs/{ids[2]}"' in second.text
    assert f'href="/jobs/{ids[4]}"' not in second.text


@pytest.mark.parametrize(
    "params", [{"page": "abc"}, {"state": "bogus"}, {"per_page": "0"}]
)
async def test_admin_job_list_rejects_bad_query(
    make_system: MakeSystem, params: dict[str, str]
) -> None:
    async with serve(admin_for(make_system())) as client:
        response = await client.get("/jobs", params=params)
    assert response.status_code == 400


async def test_admin_job_detail_shows_error(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    async with serve(admin_for(data["jobs"])) as client:
        response = await client.get(f"/jobs/{data['failed']}")
    html = response.text

    assert response.status_code == 200
    assert "ValueError" in html
    assert "cannot deliver to ada@example.com" in html
    assert "Traceback" in html
    assert f'action="/jobs/{data["failed"]}/rerun"' in html
    assert f'action="/jobs/{data["failed"]}/cancel"' not in html


async def test_admin_job_detail_not_found(make_system: MakeSystem) -> None:
    async with serve(admin_for(make_system())) as client:
        response = await client.get("/jobs/999999")
    assert response.status_code == 404


async def test_admin_job_detail_escapes_html(make_system: MakeSystem) -> None:
    jobs = make_system(queues={"notes": pgjobs.queue()})
    job_id = await jobs.send("notes", {"text": "<script>alert(1)</script>"})
    async with serve(admin_for(jobs)) as client:
        response = await client.get(f"/jobs/{job_id}")
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


class Card(BaseModel):
    number_last4: str
    token: SecretStr


class Billing(BaseModel):
    customer: str
    card: Card
    backup_cards: list[Card] = []
    api_key: SecretStr | None = None


async def test_admin_job_detail_masks_secrets(
    make_system: MakeSystem, dsn: str
) -> None:
    # A sender without the model stores the secrets in clear, as a payload
    # written by other code or an older model would be.
    sender = make_system(queues={"billing": pgjobs.queue()})
    payload = {
        "customer": "ada",
        "card": {"number_last4": "4242", "token": "tok_live_primary"},
        "backup_cards": [{"number_last4": "1111", "token": "tok_live_backup"}],
        "api_key": "sk_live_key",
    }
    job_id = await sender.send("billing", payload)
    jobs = make_system(queues={"billing": pgjobs.queue(Billing)})
    async with serve(admin_for(jobs)) as client:
        response = await client.get(f"/jobs/{job_id}")
    html = response.text

    assert response.status_code == 200
    assert "4242" in html
    assert "tok_live_primary" not in html
    assert "tok_live_backup" not in html
    assert "sk_live_key" not in html
    assert MASK in html


async def test_admin_auto_refresh_adds_meta(make_system: MakeSystem) -> None:
    jobs = make_system()
    async with serve(admin_for(jobs, auto_refresh=7)) as client:
        refreshing = await client.get("/")
    async with serve(admin_for(jobs)) as client:
        without_refresh = await client.get("/")
    assert '<meta http-equiv="refresh" content="7">' in refreshing.text
    assert 'http-equiv="refresh"' not in without_refresh.text


async def test_admin_links_follow_mount_prefix(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    host = Starlette(routes=[Mount("/ops/queue", app=admin_for(data["jobs"]))])
    async with serve(host) as client:
        page = await client.get("/ops/queue/jobs")
        detail = await client.get(f"/ops/queue/jobs/{data['failed']}")

    assert page.status_code == 200
    assert f'href="/ops/queue/jobs/{data["failed"]}"' in page.text
    assert f'action="/ops/queue/jobs/{data["failed"]}/rerun"' in detail.text
    assert "Path=/ops/queue/;" in page.headers["set-cookie"]


# -- actions and CSRF ------------------------------------------------------------


async def test_admin_rerun_redirects_with_message(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    failed = data["failed"]
    async with serve(admin_for(data["jobs"])) as client:
        page = await client.get(f"/jobs/{failed}")
        posted = await client.post(
            f"/jobs/{failed}/rerun", data={"csrf_token": csrf_token(page.text)}
        )
        location = posted.headers["location"]
        followed = await client.get(location)
        again = await client.get(location)

    new_id = int(location.rsplit("/", 1)[1])
    assert posted.status_code == 303
    assert new_id != failed
    assert job_status(query, new_id) is not None
    assert f"Job {failed} queued again as job {new_id}." in followed.text
    assert "queued again" not in again.text


async def test_admin_rerun_of_queued_job_shows_error(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    queued = data["queued"]
    async with serve(admin_for(data["jobs"])) as client:
        page = await client.get(f"/jobs/{queued}")
        posted = await client.post(
            f"/jobs/{queued}/rerun", data={"csrf_token": csrf_token(page.text)}
        )
        followed = await client.get(posted.headers["location"])

    assert posted.status_code == 303
    assert 'class="flash error"' in followed.text
    assert job_status(query, queued) == "todo"


async def test_admin_cancel_queued_job(make_system: MakeSystem, query: Query) -> None:
    data = await make_jobs(make_system, query)
    queued = data["queued"]
    async with serve(admin_for(data["jobs"])) as client:
        page = await client.get(f"/jobs/{queued}")
        posted = await client.post(
            f"/jobs/{queued}/cancel", data={"csrf_token": csrf_token(page.text)}
        )
        followed = await client.get(posted.headers["location"])

    assert posted.status_code == 303
    assert f"Job {queued} cancelled." in followed.text
    assert job_status(query, queued) == "cancelled"


async def test_admin_post_without_token_forbidden(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    async with serve(admin_for(data["jobs"])) as client:
        await client.get(f"/jobs/{data['queued']}")
        response = await client.post(f"/jobs/{data['queued']}/cancel", data={})
    assert response.status_code == 403
    assert job_status(query, data["queued"]) == "todo"


async def test_admin_post_with_forged_token_forbidden(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    queued = data["queued"]
    forger = itsdangerous.URLSafeTimedSerializer("other-key", salt="pgjobs.admin.csrf")
    async with serve(admin_for(data["jobs"])) as client:
        page = await client.get(f"/jobs/{queued}")
        session = client.cookies["pgjobs_admin_session"]
        tampered = csrf_token(page.text)[:-2] + "xx"
        forged = forger.dumps(session)
        responses = [
            await client.post(f"/jobs/{queued}/cancel", data={"csrf_token": token})
            for token in (tampered, forged)
        ]
    assert [response.status_code for response in responses] == [403, 403]
    assert job_status(query, queued) == "todo"


async def test_admin_post_with_expired_token_forbidden(
    make_system: MakeSystem, query: Query
) -> None:
    class PastSigner(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3 * 3600

    data = await make_jobs(make_system, query)
    queued = data["queued"]
    old = itsdangerous.URLSafeTimedSerializer(
        SECRET_KEY, salt="pgjobs.admin.csrf", signer=PastSigner
    )
    async with serve(admin_for(data["jobs"])) as client:
        await client.get(f"/jobs/{queued}")
        expired = old.dumps(client.cookies["pgjobs_admin_session"])
        response = await client.post(
            f"/jobs/{queued}/cancel", data={"csrf_token": expired}
        )
    assert response.status_code == 403
    assert job_status(query, queued) == "todo"


async def test_admin_post_with_other_session_token_forbidden(
    make_system: MakeSystem, query: Query
) -> None:
    data = await make_jobs(make_system, query)
    queued = data["queued"]
    app = admin_for(data["jobs"])
    async with serve(app) as attacker:
        attacker_page = await attacker.get(f"/jobs/{queued}")
    async with serve(app) as victim:
        await victim.get(f"/jobs/{queued}")
        response = await victim.post(
            f"/jobs/{queued}/cancel",
            data={"csrf_token": csrf_token(attacker_page.text)},
        )
    assert response.status_code == 403
    assert job_status(query, queued) == "todo"


async def test_admin_pages_forbid_framing(make_system: MakeSystem) -> None:
    async with serve(admin_for(make_system())) as client:
        response = await client.get("/")
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


# -- metrics ---------------------------------------------------------------------


async def test_admin_metrics_exposition(make_system: MakeSystem, query: Query) -> None:
    data = await make_jobs(make_system, query)
    async with serve(admin_for(data["jobs"])) as client:
        response = await client.get("/metrics")
    lines = response.text.splitlines()

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE pgjobs_jobs gauge" in lines
    assert 'pgjobs_jobs{queue="emails",state="failed"} 1' in lines
    assert 'pgjobs_jobs{queue="emails",state="succeeded"} 1' in lines
    assert 'pgjobs_jobs{queue="reports",state="queued"} 1' in lines
    assert any(
        line.startswith('pgjobs_oldest_ready_age_seconds{queue="reports"} ')
        for line in lines
    )


def test_render_metrics_escapes_labels() -> None:
    now = datetime.datetime.now(datetime.UTC)
    queue = QueueStats(queue='odd"name\\x', configured=False, queued=2, total=2)
    stats = Stats(queues=[queue], totals=queue, generated_at=now)
    text = render_metrics(stats)
    assert 'pgjobs_jobs{queue="odd\\"name\\\\x",state="queued"} 2' in text
    assert 'pgjobs_queue_configured{queue="odd\\"name\\\\x"} 0' in text


# -- masking ---------------------------------------------------------------------


class Nested(BaseModel):
    secret: SecretStr
    plain: str


class Envelope(BaseModel):
    by_alias: Annotated[SecretStr, Field(alias="apiKey")]
    mapping: dict[str, Nested] = {}
    pair: tuple[Nested, str] | None = None
    either: Nested | int | None = None
    raw: bytes | None = None


def test_mask_payload_covers_nested_types() -> None:
    nested = {"secret": "s3", "plain": "p"}
    payload = {
        "apiKey": "key",
        "mapping": {"a": nested},
        "pair": [nested, "tail"],
        "either": nested,
        "unknown": "kept",
    }
    masked = mask_payload(payload, Envelope)
    assert masked["apiKey"] == MASK
    assert masked["mapping"]["a"] == {"secret": MASK, "plain": "p"}
    assert masked["pair"] == [{"secret": MASK, "plain": "p"}, "tail"]
    assert masked["either"] == {"secret": MASK, "plain": "p"}
    assert masked["unknown"] == "kept"
    assert payload["mapping"]["a"]["secret"] == "s3"


def test_mask_payload_without_model_unchanged() -> None:
    payload = {"token": "t"}
    assert mask_payload(payload, None) == payload

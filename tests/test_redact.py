from __future__ import annotations

import logging

import pydantic
import pytest

import pgjobs
from tests.conftest import wait_for


class Login(pydantic.BaseModel):
    user: str
    token: pydantic.SecretStr


class Envelope(pydantic.BaseModel):
    inner: Login


async def test_redact_secret_absent_from_worker_logs(
    make_system, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="procrastinate")
    seen: list[str] = []
    jobs = make_system(queues={"login": pgjobs.queue(Envelope, retry_limit=0)})

    async def handle(payload: Envelope) -> None:
        seen.append(payload.inner.token.get_secret_value())
        raise RuntimeError("refused")

    await jobs.init_jobs({"login": handle})
    await jobs.send("login", {"inner": {"user": "ada", "token": "hunter2"}})
    await wait_for(lambda: seen)
    await jobs.stop()

    assert seen == ["hunter2"]
    assert "hunter2" not in caplog.text
    assert any("**********" in record.getMessage() for record in caplog.records)


async def test_redact_dashboard_masks_secret(make_system) -> None:
    jobs = make_system(queues={"login": pgjobs.queue(Login)})
    job_id = await jobs.send("login", {"user": "ada", "token": "hunter2"})
    assert job_id is not None

    detail = await jobs.dashboard.get_job_by_id(job_id)

    assert detail is not None
    assert detail.payload["token"] == "**********"
    assert detail.payload["user"] == "ada"

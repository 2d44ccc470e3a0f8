from __future__ import annotations

import pgjobs
from tests.conftest import wait_for


async def test_send_and_run(make_system, query) -> None:
    seen = []
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": seen.append})
    job_id = await jobs.send("q", {"a": 1})
    await wait_for(lambda: seen)
    assert seen == [{"a": 1}]
    await wait_for(
        lambda: (
            query("select status from procrastinate_jobs where id=%s", job_id)
            == [("succeeded",)]
        )
    )

"""The job system of the FastAPI example: one queue and its handler.

The web process and `pgjobs worker fastapi_app.jobs:jobs` both import this
module, so both know the queue and its handler.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

import pgjobs

logger = logging.getLogger(__name__)


class Email(BaseModel):
    """Payload of the emails queue."""

    to: str
    subject: str


EMAILS = pgjobs.queue(Email, retry_limit=3, retry_delay=5, retry_backoff=True)

# The database comes from the DATABASE_URL environment variable.
jobs = pgjobs.create_job_system({"queues": {"emails": EMAILS}})


@jobs.handler(EMAILS)
async def send_email(email: Email, context: pgjobs.JobContext) -> dict[str, str]:
    """Pretend to send an e-mail; the return value is stored as the result."""
    logger.info(
        "Sending %r to %s (job %s, attempt %s)",
        email.subject,
        email.to,
        context.job_id,
        context.attempt,
    )
    return {"delivered_to": email.to}

"""Masking of secret payload fields in procrastinate's log records.

procrastinate writes each job's arguments into its worker log lines
("Starting job emails[12](payload={...})") and into the record's `job`
extra. Payload fields typed as pydantic secrets are stored in clear so the
handler gets their value, so this filter rewrites those records with the
fields masked before any logging handler receives them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import pydantic

from pgjobs._masking import mask_payload, model_has_secret

_PROCRASTINATE_LOGGERS = ("procrastinate.worker", "procrastinate.periodic")


class SecretPayloadFilter(logging.Filter):
    """Rewrite procrastinate log records of jobs whose model has secrets."""

    def __init__(self, models: Mapping[str, type[pydantic.BaseModel]]) -> None:
        super().__init__()
        self.models = dict(models)

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job", None)
        if not isinstance(job, dict):
            return True
        model = self.models.get(str(job.get("task_name")))
        kwargs = job.get("task_kwargs")
        if model is None or not isinstance(kwargs, dict):
            return True

        masked_kwargs = {
            **kwargs,
            "payload": mask_payload(kwargs.get("payload"), model),
        }
        # Built the way procrastinate's Job.call_string builds it.
        arguments = ", ".join(
            f"{key}={value!r}" for key, value in masked_kwargs.items()
        )
        masked_call = f"{job.get('task_name')}[{job.get('id')}]({arguments})"
        original = job.get("call_string")
        if isinstance(original, str) and isinstance(record.msg, str):
            record.msg = record.msg.replace(original, masked_call)
        record.job = {**job, "task_kwargs": masked_kwargs, "call_string": masked_call}
        return True


def install(
    models: Mapping[str, type[pydantic.BaseModel]], workers: Iterable[str]
) -> None:
    """Attach one filter to procrastinate's worker loggers, once per logger.

    A filter on a logger does not apply to its children's records, and each
    procrastinate worker logs through a child named after the worker, so the
    filter goes on each of those too.
    """
    secret_models = {
        queue: model for queue, model in models.items() if model_has_secret(model)
    }
    if not secret_models:
        return
    names = [*_PROCRASTINATE_LOGGERS, *(f"procrastinate.worker.{w}" for w in workers)]
    for name in names:
        target = logging.getLogger(name)
        for existing in target.filters:
            if isinstance(existing, SecretPayloadFilter):
                existing.models.update(secret_models)
                break
        else:
            target.addFilter(SecretPayloadFilter(secret_models))


__all__ = ["SecretPayloadFilter", "install"]

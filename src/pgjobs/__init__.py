"""Background jobs on the PostgreSQL your application already runs.

pgjobs wraps the procrastinate job queue with validated configuration,
typed payloads, retries, cron schedules, orphan recovery and a dashboard.
"""

from __future__ import annotations

from importlib import metadata

from pgjobs.config import (
    JobSystemConfig,
    PoolConfig,
    Queue,
    Schedule,
    WorkerConfig,
    queue,
)
from pgjobs.errors import (
    ConfigError,
    DatabaseUnavailable,
    DuplicateJob,
    HandlerError,
    JobNotFound,
    JobStateError,
    JobTimeout,
    PayloadValidationError,
    PgJobsError,
    QueueNotFound,
    SchemaError,
    SendOptionError,
    UsageError,
    WorkerLost,
)
from pgjobs.system import JobSystem, create_job_system
from pgjobs.types import Handler, JobContext

try:
    __version__ = metadata.version("pgjobs-queue")
except metadata.PackageNotFoundError:  # running from a source tree
    from pgjobs._version import __version__

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "DuplicateJob",
    "Handler",
    "HandlerError",
    "JobContext",
    "JobNotFound",
    "JobStateError",
    "JobSystem",
    "JobSystemConfig",
    "JobTimeout",
    "PayloadValidationError",
    "PgJobsError",
    "PoolConfig",
    "Queue",
    "QueueNotFound",
    "Schedule",
    "SchemaError",
    "SendOptionError",
    "UsageError",
    "WorkerConfig",
    "WorkerLost",
    "__version__",
    "create_job_system",
    "queue",
]

"""The emails app: starts the job workers when the process should run them."""

from __future__ import annotations

import atexit
import os

from django.apps import AppConfig


class EmailsConfig(AppConfig):
    """App config whose `ready()` starts the workers when ENABLE_WORKER=true."""

    name = "emails"

    def ready(self) -> None:
        """Start the workers on a background thread, once Django is set up.

        Django runs `ready()` in every process that loads the project,
        management commands included, so the workers start only in processes
        that set ENABLE_WORKER=true.
        """
        if os.environ.get("ENABLE_WORKER", "false").lower() != "true":
            return
        from emails.jobs import jobs

        jobs.init_jobs_sync()
        atexit.register(jobs.stop_sync)

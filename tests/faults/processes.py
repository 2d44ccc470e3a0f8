"""Worker processes for the fault tests, started and ended by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.app:jobs"


def worker_command() -> list[str]:
    """Return the command line of a worker process of the test app."""
    return [sys.executable, "-m", "pgjobs", "worker", APP]


class WorkerProcess:
    """One worker process of `tests.faults.app`, with its output in a file."""

    def __init__(
        self,
        dsn: str,
        config: dict[str, Any],
        *,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command or worker_command()
        handle, name = tempfile.mkstemp(prefix="pgjobs-worker-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        environment = {
            **os.environ,
            "FAULTS_DSN": dsn,
            "FAULTS_CONFIG": json.dumps(config),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
            ),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        environment.pop("DATABASE_URL", None)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Tell whether the process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Send SIGKILL, as a crash or the OOM killer would."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        """Send SIGTERM, as a deploy or `docker stop` would."""
        os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code."""
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        """Return what the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        """Kill the process if it still runs and delete its output file."""
        if self.alive():
            self.kill()
        self.log_path.unlink(missing_ok=True)

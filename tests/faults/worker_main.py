"""Run the fault tests' job system as a worker process, without the CLI.

`python -m tests.faults.worker_main` works like `pgjobs worker
tests.faults.app:jobs`: SIGTERM or SIGINT stops it gracefully, exit code 0.
"""

from __future__ import annotations

import asyncio
import signal

from tests.faults.app import jobs


async def main() -> int:
    """Run the workers until a signal arrives, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await jobs.init_jobs()
    await stop.wait()
    await jobs.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

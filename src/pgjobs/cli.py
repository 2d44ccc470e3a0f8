"""The `pgjobs` command: run workers, inspect and act on jobs, run the demo.

Exit status: 0 on success, 1 when the command failed, 2 for an invalid
command line, 130 when interrupted before a graceful stop was possible.
This module is the only place in pgjobs that configures logging handlers or
installs signal handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from pgjobs import _cli_output as output
from pgjobs._cli_parser import APP_ENV_VAR, build_parser
from pgjobs.dashboard import FINISHED_STATES
from pgjobs.errors import DatabaseUnavailable, JobNotFound, PgJobsError
from pgjobs.system import JobSystem

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

_FIRST_CONNECT_DELAY = 1.0
_MAX_CONNECT_DELAY = 10.0

_MAX_CAUSES = 10


class CommandError(PgJobsError):
    """A command that cannot run as given; the message states what to change."""


# -- loading the application -------------------------------------------------


def load_system(spec: str) -> JobSystem:
    """Import `module:attribute` and return the job system it names.

    The attribute may be a `JobSystem` or a function with no arguments that
    returns one. Importing the module registers its `@jobs.handler` functions.

    Raises:
        CommandError: the module or attribute is missing, or is not a job system.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"invalid app {spec!r}: use module:attribute, for example myapp.jobs:jobs"
        )
    # As with `python -m`, modules of the current directory can be imported.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CommandError(
                f"module {module_name!r} not found; check the name and that it can "
                f"be imported from {os.getcwd()}"
            ) from None
        raise CommandError(f"importing module {module_name!r} failed") from exc
    except Exception as exc:
        raise CommandError(f"importing module {module_name!r} failed") from exc

    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(target, JobSystem) and callable(target):
        try:
            target = target()
        except Exception as exc:
            raise CommandError(f"calling {spec!r} failed") from exc
    if not isinstance(target, JobSystem):
        raise CommandError(
            f"{spec!r} is a {type(target).__name__}, not a JobSystem; name the "
            "object that create_job_system() returned"
        )
    return target


def _app_spec(args: argparse.Namespace) -> str:
    positional = getattr(args, "app_spec", None)
    if positional and args.app and positional != args.app:
        raise CommandError(
            f"two apps given, {positional!r} and --app {args.app!r}; give one"
        )
    spec = positional or args.app or os.environ.get(APP_ENV_VAR)
    if not spec:
        raise CommandError(
            f"no job system given: pass --app module:attribute or set {APP_ENV_VAR}"
        )
    return str(spec)


# -- commands ----------------------------------------------------------------


def _print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    print(json.dumps(value, indent=2, ensure_ascii=False))


async def _stats(jobs: JobSystem, args: argparse.Namespace) -> int:
    stats = await jobs.dashboard.get_stats()
    print(stats.model_dump_json(indent=2) if args.json else output.stats_table(stats))
    return EXIT_OK


async def _jobs(jobs: JobSystem, args: argparse.Namespace) -> int:
    page = await jobs.dashboard.get_recent_jobs(
        page=args.page,
        per_page=args.per_page,
        queue=args.queue,
        state=args.state,
        search=args.search,
        cursor=args.cursor,
    )
    print(page.model_dump_json(indent=2) if args.json else output.job_page(page))
    return EXIT_OK


async def _show(jobs: JobSystem, args: argparse.Namespace) -> int:
    detail = await jobs.dashboard.get_job_by_id(args.job_id)
    if detail is None:
        raise JobNotFound(args.job_id)
    if args.json:
        print(detail.model_dump_json(indent=2))
    else:
        print(output.job_detail(detail, tracebacks=args.verbose > 0))
    return EXIT_OK


async def _rerun(jobs: JobSystem, args: argparse.Namespace) -> int:
    result = await jobs.dashboard.rerun_job(args.job_id)
    if args.json:
        print(result.model_dump_json(indent=2))
    elif result.duplicate:
        print(
            f"Job {result.original_id} not sent again: a job with its singleton "
            "key is already queued or running"
        )
    else:
        print(f"Job {result.original_id} sent again as job {result.job_id}")
    return EXIT_OK


async def _cancel(jobs: JobSystem, args: argparse.Namespace) -> int:
    result = await jobs.dashboard.cancel_job(args.job_id)
    if args.json:
        print(result.model_dump_json(indent=2))
        return EXIT_OK
    messages = {
        "cancelled": f"Job {result.job_id} cancelled",
        "abort_requested": f"Abort of running job {result.job_id} requested; "
        "it ends as aborted",
        "unchanged": f"Job {result.job_id} has already finished "
        f"({result.state}); nothing to do",
    }
    print(messages[result.action])
    return EXIT_OK


async def _prune(jobs: JobSystem, args: argparse.Namespace) -> int:
    states = tuple(args.states) if args.states else FINISHED_STATES
    result = await jobs.dashboard.prune(older_than=args.older_than, states=states)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        age = output.format_age(args.older_than.total_seconds())
        noun = "job" if result.deleted == 1 else "jobs"
        print(f"Deleted {result.deleted} {noun} ({', '.join(states)}) older than {age}")
    return EXIT_OK


async def _migrate(jobs: JobSystem, args: argparse.Namespace) -> int:
    applied = await jobs.migrate()
    if args.json:
        _print_json({"applied": applied})
    elif applied:
        print("Applied: " + ", ".join(applied))
    else:
        print(f"Schema {jobs.config.schema_name!r} is up to date")
    return EXIT_OK


Command = Callable[[JobSystem, argparse.Namespace], Coroutine[Any, Any, int]]
_COMMANDS: dict[str, Command] = {
    "stats": _stats,
    "jobs": _jobs,
    "show": _show,
    "rerun": _rerun,
    "cancel": _cancel,
    "prune": _prune,
    "migrate": _migrate,
}


async def _run_command(jobs: JobSystem, args: argparse.Namespace) -> int:
    try:
        return await _COMMANDS[args.command](jobs, args)
    finally:
        await jobs.stop()


async def run_worker(
    jobs: JobSystem, queues: Sequence[str] | None, wait_for_database: float = 0.0
) -> int:
    """Run the workers until SIGTERM or SIGINT, then stop gracefully.

    The first signal calls `jobs.stop()`: fetching stops, running jobs get
    the graceful timeout to finish, the rest are aborted so that they are
    retried, and every final status is written. Later signals are logged
    and change nothing. With `wait_for_database` seconds, an unreachable
    database at start-up is retried for that long before the command fails.
    """
    if not jobs.config.queues:
        raise CommandError(
            "the job system has no queues, so no worker can run; add queues to "
            "its configuration"
        )
    loop = asyncio.get_running_loop()
    worker = asyncio.current_task()
    stopping: asyncio.Task[None] | None = None
    graceful = jobs.config.worker.graceful_timeout

    def on_signal(signum: signal.Signals) -> None:
        nonlocal stopping
        if stopping is not None:
            logger.warning(
                "Received %s again; still stopping (running jobs get up to %g s)",
                signum.name,
                graceful,
                extra={"action": "stop_requested_again"},
            )
            return
        logger.info(
            "Received %s; stopping: running jobs get up to %g s to finish",
            signum.name,
            graceful,
            extra={"action": "stop_requested"},
        )
        if jobs.workers is None and worker is not None:
            # Still starting: nothing runs yet, so the start is abandoned.
            worker.cancel()
        stopping = loop.create_task(jobs.stop(), name="pgjobs-stop")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await _connect(jobs, wait_for_database)
        await jobs.run_worker(queues=queues)
    except asyncio.CancelledError:
        if stopping is None:
            raise
    finally:
        if stopping is None:
            await jobs.stop()
        else:
            await asyncio.shield(stopping)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    if stopping is None:
        raise CommandError("the workers stopped without a stop signal")
    return EXIT_OK


async def _connect(jobs: JobSystem, wait_for_database: float) -> None:
    """Start the job system, retrying for `wait_for_database` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_for_database
    delay = _FIRST_CONNECT_DELAY
    while True:
        try:
            await jobs.get_app()
            return
        except DatabaseUnavailable as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise
            delay = min(delay, left)
            logger.warning(
                "%s; retrying in %.0f s (%.0f s left of --wait-for-database)",
                exc,
                delay,
                left,
                extra={"action": "wait_for_database"},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_CONNECT_DELAY)


def _run_demo(args: argparse.Namespace) -> int:
    from pgjobs import demo

    defaults = demo.DemoOptions()
    options = demo.DemoOptions(
        directory=args.directory or defaults.directory,
        limit=args.limit or defaults.limit,
        schema=args.schema or defaults.schema,
        timeout=args.timeout.total_seconds() if args.timeout else defaults.timeout,
        verbose=args.verbose > 0,
    )
    demo.main(options)
    return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _run_demo(args)
    jobs = load_system(_app_spec(args))
    if args.command == "worker":
        wait = args.wait_for_database
        seconds = wait.total_seconds() if wait is not None else 0.0
        return asyncio.run(run_worker(jobs, args.queues, seconds))
    return asyncio.run(_run_command(jobs, args))


# -- logging and errors ------------------------------------------------------


def configure_logging(verbosity: int, command: str) -> None:
    """Send logs to stderr: WARNING and up, INFO and up with -v, all with -vv.

    `pgjobs worker` also shows pgjobs' INFO logs (start, stop, recovered
    jobs) by default. The demo hides procrastinate's per-job logs unless -v
    is given, because it reports failed jobs itself.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {0: logging.WARNING, 1: logging.INFO}
    root.setLevel(levels.get(verbosity, logging.DEBUG))
    if verbosity == 0 and command == "worker":
        logging.getLogger("pgjobs").setLevel(logging.INFO)
    if verbosity == 0 and command == "demo":
        logging.getLogger("procrastinate.worker").setLevel(logging.CRITICAL)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = {id(exc)}
    current: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        assert current is not None
        following = current.__cause__
        if following is None and not current.__suppress_context__:
            following = current.__context__
        if following is None or id(following) in seen:
            return
        seen.add(id(following))
        yield following
        current = following


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, PgJobsError) and text:
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def report_error(exc: BaseException, *, verbose: bool) -> None:
    """Print `exc` and its causes to stderr; the traceback only when verbose."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
        return
    print(f"pgjobs: error: {_describe(exc)}", file=sys.stderr)
    for cause in _causes(exc):
        print(f"  caused by: {_describe(cause)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `pgjobs` command line and return its exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.command)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("pgjobs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output exited early, as `pgjobs jobs | head` does.
        # Point stdout at /dev/null so the interpreter's final flush does not
        # raise the same error again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        report_error(exc, verbose=args.verbose > 0)
        return EXIT_FAILURE

"""The `pgjobs` command: run workers, inspect and act on jobs, run the demo.

Exit status: 0 on success, 1 when the command failed, 2 for an invalid
command line, 130 when interrupted before a graceful stop was possible.
This module is the only place in pgjobs that configures logging handlers or
installs signal handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pgjobs import _cli_output as output
from pgjobs.dashboard import FINISHED_STATES, JOB_STATES, MAX_PER_PAGE
from pgjobs.errors import JobNotFound, PgJobsError
from pgjobs.system import JobSystem

logger = logging.getLogger(__name__)

APP_ENV_VAR = "PGJOBS_APP"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_CAUSES = 10


class CommandError(PgJobsError):
    """A command that cannot run as given; the message states what to change."""


# -- argument types ----------------------------------------------------------


def parse_duration(text: str) -> datetime.timedelta:
    """Parse '30d', '12h', '1h30m', '90s' or a bare number of seconds.

    Raises:
        argparse.ArgumentTypeError: the text is not a positive duration.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        if not re.fullmatch(f"(?:{_DURATION_PART.pattern})+", value):
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r}: use a number with a unit s, m, h, d or "
                "w, such as 30d, 12h or 1h30m (a bare number is seconds)"
            ) from None
        seconds = sum(
            float(amount) * _DURATION_UNITS[unit]
            for amount, unit in _DURATION_PART.findall(value)
        )
    if not seconds > 0 or seconds > 86400 * 365 * 100:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: must be more than 0 and at most 100 years"
        )
    return datetime.timedelta(seconds=seconds)


def _positive_int(kind: str, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1 or (maximum is not None and value > maximum):
            limit = f" from 1 to {maximum}" if maximum else " of 1 or more"
            raise argparse.ArgumentTypeError(
                f"invalid {kind} {text!r}: must be a whole number{limit}"
            )
        return value

    parse.__name__ = kind
    return parse


# -- parser ------------------------------------------------------------------


def _common_options(
    parser: argparse.ArgumentParser, *, top: bool, app: bool = True
) -> None:
    # The options are accepted both before and after the command name. On a
    # command, the default is SUPPRESS so that it does not overwrite a value
    # given before the command name.
    default: Any = None if top else argparse.SUPPRESS
    if app:
        parser.add_argument(
            "--app",
            metavar="MODULE:ATTR",
            default=default,
            help="the job system: a JobSystem, or a function with no arguments "
            f"that returns one, as module:attribute (default: ${APP_ENV_VAR})",
        )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="show INFO logs and tracebacks; twice for DEBUG logs",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `pgjobs` command line."""
    parser = argparse.ArgumentParser(
        prog="pgjobs",
        description="Background jobs on PostgreSQL: run workers, inspect and "
        "act on jobs, run the demo.",
        epilog="Exit status: 0 on success, 1 on failure, 2 for an invalid "
        "command line.",
    )
    _common_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, top=False)
    verbose_only = argparse.ArgumentParser(add_help=False)
    _common_options(verbose_only, top=False, app=False)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print JSON for programs to read"
    )
    job_id = _positive_int("job id")

    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run workers until SIGTERM or SIGINT",
        description="Run the workers of the job system until SIGTERM or SIGINT. "
        "On a signal, stop fetching jobs, let running jobs finish within the "
        "configured graceful timeout (worker.graceful_timeout, in seconds), "
        "abort the rest so they are retried, and exit 0.",
    )
    worker.add_argument(
        "app_spec",
        nargs="?",
        metavar="APP",
        help="the job system as module:attribute; same as --app",
    )
    worker.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="QUEUE",
        help="work only this queue; repeat for several (default: all queues)",
    )

    commands.add_parser(
        "stats",
        parents=[common, as_json],
        help="count jobs per queue and state",
        description="Count jobs per queue and state. Queues that the "
        "configuration does not define are marked with *.",
    )

    jobs = commands.add_parser(
        "jobs",
        parents=[common, as_json],
        help="list jobs, newest first",
        description="List jobs, newest first, one page at a time.",
    )
    jobs.add_argument("--queue", help="only jobs of this queue")
    jobs.add_argument(
        "--state",
        choices=JOB_STATES,
        metavar="STATE",
        help=f"only jobs in this state: {', '.join(JOB_STATES)}",
    )
    jobs.add_argument(
        "--search",
        metavar="TEXT",
        help="only the job with this id, the jobs with this singleton key, or "
        "jobs with this value anywhere in the payload (whole values, "
        "case-sensitive)",
    )
    jobs.add_argument(
        "--page",
        type=_positive_int("page"),
        default=1,
        metavar="N",
        help="page number (default 1)",
    )
    jobs.add_argument(
        "--per-page",
        type=_positive_int("page size", MAX_PER_PAGE),
        default=50,
        metavar="N",
        help=f"jobs per page, 1 to {MAX_PER_PAGE} (default 50)",
    )
    jobs.add_argument(
        "--cursor",
        help="start after this position, printed as the next page's cursor; "
        "fast at any depth, unlike --page",
    )

    show = commands.add_parser(
        "show",
        parents=[common, as_json],
        help="show one job with its timeline and attempts",
        description="Show one job: payload, timeline and every recorded "
        "attempt with its error (tracebacks with -v).",
    )
    show.add_argument("job_id", type=job_id, metavar="ID", help="the job id")

    rerun = commands.add_parser(
        "rerun",
        parents=[common, as_json],
        help="send a fresh copy of a finished job",
        description="Send a fresh copy of a finished job: same queue, payload "
        "and priority. A queued or running job is rejected.",
    )
    rerun.add_argument("job_id", type=job_id, metavar="ID", help="the job id")

    cancel = commands.add_parser(
        "cancel",
        parents=[common, as_json],
        help="cancel a waiting job, or abort a running one",
        description="Cancel a waiting job, or request the abort of a running "
        "one (it ends as aborted).",
    )
    cancel.add_argument("job_id", type=job_id, metavar="ID", help="the job id")

    prune = commands.add_parser(
        "prune",
        parents=[common, as_json],
        help="delete finished jobs older than a given age",
        description="Delete finished jobs, with their events and attempt "
        "records, that finished longer ago than --older-than.",
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="minimum age: a number with a unit s, m, h, d or w, such as 30d, "
        "12h or 1h30m (a bare number is seconds)",
    )
    prune.add_argument(
        "--state",
        action="append",
        dest="states",
        choices=FINISHED_STATES,
        metavar="STATE",
        help=f"delete only jobs in this final state ({', '.join(FINISHED_STATES)}); "
        "repeat for several (default: all four)",
    )

    commands.add_parser(
        "migrate",
        parents=[common, as_json],
        help="install or upgrade the database schema",
        description="Install the schema of the job system in its database, "
        "or apply the migrations it lacks. Safe to run twice.",
    )

    demo = commands.add_parser(
        "demo",
        parents=[verbose_only],
        help="process the files of a directory tree as jobs",
        description="Send one job per file of a directory tree (the Python "
        "standard library by default); each job stores the file's SHA-256 "
        "digest and line counts, and files that are not UTF-8 fail after "
        "retries. Uses $DATABASE_URL, or else starts the embedded PostgreSQL. "
        "Drops and recreates its own schema at start.",
    )
    demo.add_argument(
        "directory",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="the directory tree (default: the Python standard library)",
    )
    demo.add_argument(
        "--limit",
        type=_positive_int("limit"),
        default=None,
        metavar="N",
        help="process at most N files, spread over the tree (default 2000)",
    )
    demo.add_argument(
        "--timeout",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="give up when the jobs take longer, such as 300 or 5m; a bare "
        "number is seconds (default 300)",
    )
    demo.add_argument(
        "--schema",
        default=None,
        help="PostgreSQL schema that the demo drops and recreates "
        "(default pgjobs_demo)",
    )
    return parser


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
        "unchanged": f"Job {result.job_id} is already {result.state}; nothing to do",
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


async def run_worker(jobs: JobSystem, queues: Sequence[str] | None) -> int:
    """Run the workers until SIGTERM or SIGINT, then stop gracefully.

    The first signal calls `jobs.stop()`: fetching stops, running jobs get
    the graceful timeout to finish, the rest are aborted so that they are
    retried, and every final status is written. Later signals are logged
    and change nothing.
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
        return asyncio.run(run_worker(jobs, args.queues))
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
    except Exception as exc:
        report_error(exc, verbose=args.verbose > 0)
        return EXIT_FAILURE

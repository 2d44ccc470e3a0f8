"""The parser of the `pgjobs` command line and its argument types."""

from __future__ import annotations

import argparse
import datetime
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgjobs.dashboard import FINISHED_STATES, JOB_STATES, MAX_PER_PAGE

APP_ENV_VAR = "PGJOBS_APP"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
    worker.add_argument(
        "--wait-for-database",
        type=parse_duration,
        metavar="DURATION",
        help="at start-up, retry for up to this long while the database is "
        "unreachable, such as 60s or 5m (default: exit 1 at once)",
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

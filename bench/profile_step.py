"""Profile one benchmark step of one contender with cProfile.

Run `.venv/bin/python bench/profile_step.py STEP [--contender NAME]`, where STEP
is send, send_many, drain_c1, drain_c10 or latency. The step runs once
unprofiled to warm up, then once under cProfile, on a scratch database that
is dropped afterwards. The profile covers the whole process: the sending
code and the in-process worker alike.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys

import contenders
import psycopg
import psycopg.conninfo
import run


async def profile(dsn: str, args: argparse.Namespace) -> cProfile.Profile:
    everyone = {c.label: c for c in contenders.build(dsn, schema_check=True)}
    contender = everyone[args.contender]
    settings = run.Settings(
        rounds=1,
        sends=args.count,
        batches=max(1, args.count // 100),
        batch_size=100,
        drain_jobs=args.count,
        latency_samples=min(args.count, 500),
        latency_gap=0.01,
    )
    profiler = cProfile.Profile()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await contender.install(admin)
        await contender.open()
        try:
            bench = run.Bench(admin, settings)
            step = getattr(bench, args.step)
            await step(contender)
            profiler.enable()
            values = await step(contender)
            profiler.disable()
            print(values, file=sys.stderr)
        finally:
            await contender.close()
    return profiler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "step", choices=["send", "send_many", "drain_c1", "drain_c10", "latency"]
    )
    parser.add_argument(
        "--contender",
        default="pgjobs",
        choices=[
            "pgjobs",
            "raw default",
            "raw tuned pool",
            "raw tuned pool, pgjobs schema",
        ],
    )
    parser.add_argument(
        "--count", type=int, default=2000, help="jobs or calls (default: %(default)s)"
    )
    parser.add_argument("--dsn", default=run.DEFAULT_DSN)
    parser.add_argument("--database", default="pgjobs_bench_profile")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--limit", type=int, default=40, help="rows to print")
    parser.add_argument(
        "--match", help="print only functions whose file or name matches this regex"
    )
    args = parser.parse_args()

    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=args.database)
    asyncio.run(run.create_database(args.dsn, args.database))
    try:
        profiler = asyncio.run(profile(dsn, args))
    finally:
        asyncio.run(run.drop_database(args.dsn, args.database))
    stats = pstats.Stats(profiler)
    restrictions: list[str | int] = [args.limit]
    if args.match:
        restrictions.insert(0, args.match)
    stats.sort_stats(args.sort).print_stats(*restrictions)
    return 0


if __name__ == "__main__":
    sys.exit(main())

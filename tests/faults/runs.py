"""The table where the fault tests' handler records each run."""

from __future__ import annotations

import psycopg

RUNS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS public.fault_runs (
    job_id bigint NOT NULL,
    queue text NOT NULL,
    attempt integer NOT NULL,
    phase text NOT NULL,
    pid integer NOT NULL,
    scheduled_for double precision,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def create_runs_table(dsn: str) -> None:
    """Create the table where the handler records each run."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RUNS_TABLE_SQL)

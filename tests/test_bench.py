"""The benchmark scripts run end to end on a tiny workload.

They are not part of the package, so a change to pgjobs' API that breaks
them would otherwise go unnoticed until someone runs `make bench`.
"""

from __future__ import annotations

import json
import pathlib
import uuid
from types import ModuleType
from typing import Any

import psycopg
import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return a loader of bench/ scripts as modules, with bench/ on sys.path."""
    monkeypatch.syspath_prepend(str(BENCH))

    def load(name: str) -> ModuleType:
        return __import__(name)

    return load


def _databases(server_dsn: str, name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        cursor = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchall()


def test_bench_run_tiny(
    bench_module: Any,
    server_dsn: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = bench_module("run")
    database = f"pgjobs_bench_test_{uuid.uuid4().hex[:12]}"
    output = tmp_path / "values.json"

    code = run.main(
        [
            "--dsn",
            server_dsn,
            "--database",
            database,
            "--rounds",
            "1",
            "--sends",
            "5",
            "--batches",
            "1",
            "--batch-size",
            "5",
            "--drain-jobs",
            "20",
            "--latency-samples",
            "3",
            "--json",
            str(output),
        ]
    )

    assert code == 0
    report = capsys.readouterr().out
    assert "| drain 20 jobs, concurrency 10" in report
    values = json.loads(output.read_text())
    assert set(values["results"]) == {"pgjobs", "raw default", "raw tuned pool"}
    assert len(values["results"]["pgjobs"]["latency_p99"]) == 1
    assert _databases(server_dsn, database) == []


def test_bench_run_keeps_other_database(
    bench_module: Any, server_dsn: str, empty_dsn: str, database_name: str
) -> None:
    run = bench_module("run")

    with pytest.raises(SystemExit, match="not created by this benchmark"):
        run.main(["--dsn", server_dsn, "--database", database_name])

    assert _databases(server_dsn, database_name) == [(1,)]


def test_bench_db_cost_tiny(
    bench_module: Any, server_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db_cost = bench_module("db_cost")
    database = f"pgjobs_bench_test_{uuid.uuid4().hex[:12]}"

    code = db_cost.main(
        ["--dsn", server_dsn, "--database", database, "--rounds", "1", "--jobs", "5"]
    )

    assert code == 0
    report = capsys.readouterr().out
    assert "| pgjobs, no pgjobs triggers |" in report
    assert _databases(server_dsn, database) == []

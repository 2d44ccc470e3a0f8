"""The demo: one job per file of a directory tree, on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgjobs import demo

ROOT = Path(__file__).resolve().parents[1]
# Bounds a hung demo; no test asserts on how long the demo takes.
COMMAND_TIMEOUT = 180


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree: three text files, one Latin-1 file, and skipped folders."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "__pycache__").mkdir()
    (root / ".hidden").mkdir()
    (root / "a.py").write_text("import os\n\nprint(os.sep)\n", encoding="utf-8")
    (root / "b.txt").write_text("one line\n", encoding="utf-8")
    (root / "sub" / "c.md").write_text("# Title\n\ntext\n", encoding="utf-8")
    (root / "sub" / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (root / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00\x01")
    (root / ".hidden" / "secret.txt").write_text("x\n", encoding="utf-8")
    return root


def run_demo(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    env.pop("PGJOBS_APP", None)
    return subprocess.run(
        [sys.executable, "-m", "pgjobs", "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def file_job_statuses(query: Callable[..., Any]) -> list[tuple[str, int, int]]:
    return query(
        "SELECT status::text, count(*)::int, max(attempts)"
        "  FROM pgjobs_demo.procrastinate_jobs"
        " WHERE queue_name = 'files' GROUP BY 1 ORDER BY 1"
    )


def test_list_files_skips_caches(tree: Path) -> None:
    names = [path.name for path in demo.list_files(tree, 100)]
    assert names == ["a.py", "b.txt", "c.md", "latin1.txt"]


def test_list_files_spreads_sample(tmp_path: Path) -> None:
    for index in range(10):
        (tmp_path / f"{index:02}.txt").write_text("x\n", encoding="utf-8")
    names = [path.name for path in demo.list_files(tmp_path, 5)]
    assert names == ["00.txt", "02.txt", "04.txt", "06.txt", "08.txt"]


def test_summarize_file_counts(tree: Path) -> None:
    summary = demo.summarize_file(demo.FileJob(path=str(tree / "a.py")))
    assert summary["lines"] == 3
    assert summary["blank_lines"] == 1
    assert summary["bytes"] == len("import os\n\nprint(os.sep)\n")


def test_summarize_file_not_utf8(tree: Path) -> None:
    with pytest.raises(UnicodeDecodeError):
        demo.summarize_file(demo.FileJob(path=str(tree / "sub" / "latin1.txt")))


def test_demo_processes_tree(dsn: str, tree: Path, query: Callable[..., Any]) -> None:
    result = run_demo(dsn, str(tree))
    assert result.returncode == 0, result.stderr
    assert "files: 4/4 processed, 1 failed, 0 remaining" in result.stderr
    assert file_job_statuses(query) == [("failed", 1, 3), ("succeeded", 3, 1)]


def test_demo_reports_counts(dsn: str, tree: Path) -> None:
    result = run_demo(dsn, str(tree))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    files_row = next(row for row in rows if row and row[0] == "files")
    header = next(row for row in rows if row and row[0] == "queue")
    counts = dict(zip(header[1:], files_row[1:], strict=False))
    assert counts["succeeded"] == "3"
    assert counts["failed"] == "1"
    assert counts["total"] == "4"


def test_demo_reports_failed_job(dsn: str, tree: Path) -> None:
    result = run_demo(dsn, str(tree))
    assert result.returncode == 0, result.stderr
    assert "latin1.txt" in result.stdout
    assert "UnicodeDecodeError" in result.stdout


def test_demo_rerun_starts_clean(
    dsn: str, tree: Path, query: Callable[..., Any]
) -> None:
    first = run_demo(dsn, str(tree))
    assert first.returncode == 0, first.stderr
    second = run_demo(dsn, str(tree))
    assert second.returncode == 0, second.stderr
    assert file_job_statuses(query) == [("failed", 1, 3), ("succeeded", 3, 1)]


def test_demo_limit_option(dsn: str, tree: Path, query: Callable[..., Any]) -> None:
    result = run_demo(dsn, str(tree), "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert "files: 2/2 processed" in result.stderr


def test_demo_missing_directory(dsn: str, tmp_path: Path) -> None:
    result = run_demo(dsn, str(tmp_path / "absent"))
    assert result.returncode == 1
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr

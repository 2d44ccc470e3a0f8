"""Install and migrate the database schema: procrastinate's tables and pgjobs'.

Both live in the configured PostgreSQL schema. Every change runs in one
transaction under an advisory lock, so processes starting together do not
race to install the same tables.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Any, LiteralString

import procrastinate.schema
import psycopg
from psycopg import sql

from pgjobs.errors import SchemaError

logger = logging.getLogger(__name__)

# The two keys of pg_advisory_xact_lock(int4, int4): a constant for pgjobs and
# a hash of the schema name, so separate schemas do not wait for each other.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('pgjobs.schema'), hashtext(%s))"
_STATE_SQL = """
SELECT to_regclass(format('%%I.procrastinate_jobs', %(schema)s::text)) IS NOT NULL,
       to_regclass(format('%%I.pgjobs_meta', %(schema)s::text)) IS NOT NULL
"""
_WRITE_META_SQL = """
INSERT INTO pgjobs_meta (key, value) VALUES (%s, %s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
"""
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_PROCRASTINATE_MIGRATIONS = "procrastinate.sql.migrations"
_PROCRASTINATE_MIGRATION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_.*\.sql$")


@dataclass(frozen=True)
class SchemaState:
    """Versions found in the database; None where the part is absent."""

    procrastinate_installed: bool
    pgjobs_version: int | None
    procrastinate_version: str | None


def _read_sql(package: str, name: str) -> LiteralString:
    # Files shipped inside the packages are as trusted as code.
    text: LiteralString = (resources.files(package) / name).read_text(encoding="utf-8")
    return text


def pgjobs_migrations() -> list[tuple[int, str]]:
    """Return (version, file name) of every pgjobs migration, in order."""
    folder = resources.files("pgjobs.sql") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name))
    return sorted(found)


def latest_version() -> int:
    """Return the schema version that this pgjobs release expects."""
    return pgjobs_migrations()[-1][0]


def procrastinate_version() -> str:
    """Return the installed procrastinate version as 'major.minor.patch'."""
    version = metadata.version("procrastinate")
    parts = re.findall(r"\d+", version)[:3]
    return ".".join(parts + ["0"] * (3 - len(parts)))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _procrastinate_migrations(after: str, upto: str) -> list[str]:
    names = []
    for entry in resources.files(_PROCRASTINATE_MIGRATIONS).iterdir():
        match = _PROCRASTINATE_MIGRATION_NAME.match(entry.name)
        if not match:
            continue
        version = tuple(int(match.group(i)) for i in (1, 2, 3))
        if _version_key(after) < version <= _version_key(upto):
            names.append(entry.name)
    return sorted(names)


async def read_state(conn: psycopg.AsyncConnection[Any], schema: str) -> SchemaState:
    """Read which parts of the schema exist and at which versions."""
    cursor = await conn.execute(_STATE_SQL, {"schema": schema})
    row = await cursor.fetchone()
    assert row is not None
    has_procrastinate, has_meta = bool(row[0]), bool(row[1])
    if not has_meta:
        return SchemaState(has_procrastinate, None, None)
    table = sql.Identifier(schema, "pgjobs_meta")
    cursor = await conn.execute(sql.SQL("SELECT key, value FROM {}").format(table))
    meta = dict(await cursor.fetchall())
    version = meta.get("schema_version")
    return SchemaState(
        has_procrastinate,
        int(version) if version is not None else 0,
        meta.get("procrastinate_version"),
    )


def pending_changes(state: SchemaState) -> list[str]:
    """Describe what `migrate` would change; empty when up to date."""
    changes = []
    if not state.procrastinate_installed:
        changes.append("install procrastinate's tables")
    elif state.procrastinate_version is not None:
        current = procrastinate_version()
        for name in _procrastinate_migrations(state.procrastinate_version, current):
            changes.append(f"apply procrastinate migration {name}")
    known = state.pgjobs_version or 0
    for version, name in pgjobs_migrations():
        if version > known:
            changes.append(f"apply pgjobs migration {name}")
    return changes


def check_compatible(state: SchemaState, schema: str) -> None:
    """Raise `SchemaError` unless the schema matches this release exactly."""
    if state.pgjobs_version is not None and state.pgjobs_version > latest_version():
        raise SchemaError(
            f"schema {schema!r} is at pgjobs version {state.pgjobs_version}, newer "
            f"than this release supports ({latest_version()}); upgrade pgjobs"
        )
    changes = pending_changes(state)
    if changes:
        raise SchemaError(
            f"schema {schema!r} needs migrating ({'; '.join(changes)}); "
            "run `pgjobs migrate --app module:attr` or call jobs.migrate()"
        )


async def _apply(
    conn: psycopg.AsyncConnection[Any], schema: str, state: SchemaState
) -> list[str]:
    if state.pgjobs_version is not None and state.pgjobs_version > latest_version():
        check_compatible(state, schema)
    applied: list[str] = []
    await conn.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
    )
    await conn.execute("SELECT set_config('search_path', %s, true)", [schema])
    if not state.procrastinate_installed:
        await conn.execute(procrastinate.schema.SchemaManager.get_schema())
        applied.append("procrastinate schema")
    elif state.procrastinate_version is not None:
        current = procrastinate_version()
        for name in _procrastinate_migrations(state.procrastinate_version, current):
            await conn.execute(_read_sql(_PROCRASTINATE_MIGRATIONS, name))
            applied.append(name)
    # NOTE: procrastinate tables without pgjobs_meta, as raw procrastinate
    # installs them, carry no version. They are taken to be at the installed
    # procrastinate's version, so migrate older ones with procrastinate first.
    known = state.pgjobs_version or 0
    for version, name in pgjobs_migrations():
        if version > known:
            await conn.execute(_read_sql("pgjobs.sql", f"migrations/{name}"))
            applied.append(name)
    if applied:
        await conn.execute(_read_sql("pgjobs.sql", "pin_search_path.sql"))
        await conn.execute(_WRITE_META_SQL, ["schema_version", str(latest_version())])
        await conn.execute(
            _WRITE_META_SQL, ["procrastinate_version", procrastinate_version()]
        )
    return applied


async def ensure(
    conn: psycopg.AsyncConnection[Any], schema: str, *, migrate: bool
) -> list[str]:
    """Install the schema if absent; migrate it too when `migrate` is true.

    Returns the names of what was applied. Without `migrate`, an existing
    schema at another version raises `SchemaError` naming the fix.
    """
    async with conn.transaction():
        await conn.execute(_LOCK_SQL, [schema])
        state = await read_state(conn, schema)
        fresh = not state.procrastinate_installed and state.pgjobs_version is None
        if not migrate and not fresh:
            check_compatible(state, schema)
            return []
        applied = await _apply(conn, schema, state)
    if applied:
        logger.info(
            "Installed or migrated schema %s: %s",
            schema,
            ", ".join(applied),
            extra={"action": "migrate_schema"},
        )
    return applied

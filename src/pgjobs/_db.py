"""Connection pool and translation of driver errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import procrastinate.exceptions
import psycopg
import psycopg.conninfo
import psycopg_pool

from pgjobs.config import JobSystemConfig
from pgjobs.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)


def describe_dsn(dsn: str) -> str:
    """Return 'host:port/dbname' for messages; never the user or password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid connection string>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return f"{host}:{port}/{dbname}"


def create_pool(config: JobSystemConfig) -> psycopg_pool.AsyncConnectionPool:
    """Build the system's pool, closed; the caller opens it.

    Connections are in autocommit mode and are not checked on checkout:
    procrastinate's statements are single calls to functions that commit on
    their own, and a per-checkout check costs one extra round trip per query.
    A broken connection fails its query once and the pool drops it.
    """
    assert config.dsn is not None
    pool_config = config.pool
    return psycopg_pool.AsyncConnectionPool(
        config.dsn.get_secret_value(),
        kwargs={
            "options": f"-c search_path={config.schema_name}",
            "connect_timeout": max(1, round(pool_config.connect_timeout)),
            "application_name": "pgjobs",
        },
        min_size=pool_config.min_size,
        max_size=pool_config.max_size,
        timeout=pool_config.timeout,
        max_idle=pool_config.max_idle,
        max_lifetime=pool_config.max_lifetime,
        reconnect_timeout=max(pool_config.connect_timeout * 6, 60.0),
        name=f"pgjobs-{config.schema_name}",
        configure=_configure,
        open=False,
    )


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Set here rather than in the pool's connection kwargs: procrastinate
    # opens its LISTEN connection with those kwargs plus autocommit=True,
    # and psycopg rejects the keyword given twice.
    await conn.set_autocommit(True)


_CONNECTION_ERRORS = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
)


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """Wrap a connection failure with the target, without credentials."""
    reason = type(exc).__name__
    if isinstance(exc, psycopg_pool.PoolTimeout):
        detail = (
            "no pooled connection became free in time; raise pool.max_size or "
            "pool.timeout, or check that the server is up"
        )
    else:
        detail = "check that the server is running and accepts connections"
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {describe_dsn(dsn)} ({reason}); {detail}"
    )


def is_connection_error(exc: BaseException) -> bool:
    """Tell whether `exc` means the database could not be reached."""
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if isinstance(exc, procrastinate.exceptions.ConnectorException):
        return isinstance(exc.__cause__, _CONNECTION_ERRORS)
    return False


@contextlib.contextmanager
def translate_errors(dsn: str) -> Iterator[None]:
    """Raise `DatabaseUnavailable` for connection failures inside the block."""
    try:
        yield
    except Exception as exc:
        if is_connection_error(exc):
            raise unavailable(dsn, exc) from exc
        raise


@contextlib.asynccontextmanager
async def connection(
    pool: psycopg_pool.AsyncConnectionPool, dsn: str
) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """Borrow a pooled connection, translating connection failures."""
    with translate_errors(dsn):
        async with pool.connection() as conn:
            yield conn

"""Connection pool, start-up check and translation of driver errors."""

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
from pgjobs.errors import DatabaseUnavailable, SchemaError

logger = logging.getLogger(__name__)

APPLICATION_NAME = "pgjobs"
"""application_name of every pooled connection, as pg_stat_activity shows it."""


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


def _connection_kwargs(config: JobSystemConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "connect_timeout": max(1, round(config.pool.connect_timeout)),
        "application_name": APPLICATION_NAME,
    }
    if config.pool.transaction_pooling:
        # A transaction-mode pooler rejects the `options` startup parameter
        # and may run the next statement on a server connection that lacks
        # a statement prepared on another one.
        kwargs["prepare_threshold"] = None
    else:
        kwargs["options"] = f"-c search_path={config.schema_name}"
    return kwargs


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
        kwargs=_connection_kwargs(config),
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


async def connect(config: JobSystemConfig) -> psycopg.AsyncConnection[Any]:
    """Open one autocommit connection outside the pool, configured as the pool's are."""
    assert config.dsn is not None
    return await psycopg.AsyncConnection.connect(
        config.dsn.get_secret_value(), autocommit=True, **_connection_kwargs(config)
    )


async def check_reachable(config: JobSystemConfig) -> None:
    """Open one connection and check its search path, so start-up fails fast.

    A pool retries failed connections in the background until its timeout,
    so a refused connection would only show after `pool.timeout` seconds.
    One direct attempt fails at once (or after `connect_timeout` at most).

    Raises:
        DatabaseUnavailable: naming host, port and database, and the
            driver's reason with any password removed.
        SchemaError: the pgjobs schema is not first on the search path.
    """
    assert config.dsn is not None
    dsn = config.dsn.get_secret_value()
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, **_connection_kwargs(config))
    except psycopg.Error as exc:
        error = unavailable(dsn, exc)
    else:
        try:
            await check_search_path(conn, config)
        except psycopg.Error as exc:
            error = unavailable(dsn, exc)
        else:
            return
        finally:
            await conn.close()
    raise error


async def check_search_path(
    conn: psycopg.AsyncConnection[Any], config: JobSystemConfig
) -> None:
    """Raise `SchemaError` unless the pgjobs schema is first on the search path.

    procrastinate's queries name its tables and functions without a schema.
    A pooler that drops the `options` startup parameter (PgBouncer with
    `ignore_startup_parameters = options`), or a server without the role or
    database setting that `pool.transaction_pooling` needs, would otherwise
    fail later with "function does not exist", or use another schema's tables.
    """
    cursor = await conn.execute(
        "SELECT current_setting('search_path'), current_user, current_database()"
    )
    row = await cursor.fetchone()
    assert row is not None
    search_path, user, database = row
    assert config.dsn is not None
    first = search_path.split(",")[0].strip().strip('"')
    if first == "$user":
        first = user
    schema = config.schema_name
    if first == schema:
        return
    if config.pool.transaction_pooling:
        fix = (
            "with pool.transaction_pooling pgjobs cannot set it per connection; "
            f"set it on the server: ALTER ROLE {user} IN DATABASE {database} "
            f"SET search_path = {schema}, public"
        )
    else:
        fix = (
            "a pooler may have dropped the `options` startup parameter; behind "
            "PgBouncer in transaction mode set pool.transaction_pooling=True and "
            f"ALTER ROLE {user} IN DATABASE {database} SET search_path = "
            f"{schema}, public"
        )
    target = describe_dsn(config.dsn.get_secret_value())
    raise SchemaError(
        f"connections to {target} use search_path {search_path!r}, which does "
        f"not start with the pgjobs schema {schema!r}; {fix}"
    )


def _reason(dsn: str, exc: BaseException) -> str:
    """Return the first line of the driver's message, without the password."""
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    with contextlib.suppress(psycopg.ProgrammingError):
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
        if password:
            reason = reason.replace(str(password), "***")
    return reason.replace(dsn, "<dsn>")


_CONNECTION_ERRORS = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
)

# SQLSTATEs of a schema that is absent or incomplete: undefined function,
# table, type or schema.
_MISSING_SCHEMA_STATES = frozenset({"42883", "42P01", "42704", "3F000"})


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """Wrap a connection failure with the target, without credentials."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        detail = (
            "no pooled connection became free in time; raise pool.max_size or "
            "pool.timeout, or check that the server is up"
        )
    else:
        detail = "check that the server is running and that the dsn is right"
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {describe_dsn(dsn)} "
        f"({type(exc).__name__}: {_reason(dsn, exc)}); {detail}"
    )


def _driver_error(exc: BaseException) -> BaseException:
    # procrastinate wraps psycopg errors in ConnectorException, as the cause.
    if isinstance(exc, procrastinate.exceptions.ConnectorException):
        return exc.__cause__ or exc
    return exc


def is_connection_error(exc: BaseException) -> bool:
    """Tell whether `exc` means the database could not be reached."""
    return isinstance(_driver_error(exc), _CONNECTION_ERRORS)


def _missing_schema(dsn: str, schema: str) -> SchemaError:
    return SchemaError(
        f"the pgjobs schema {schema!r} is not installed in {describe_dsn(dsn)}; "
        "install it with `await jobs.init_jobs(...)`, `await jobs.migrate()` or "
        "`pgjobs migrate --app module:attribute`"
    )


@contextlib.contextmanager
def translate_errors(dsn: str, schema: str | None = None) -> Iterator[None]:
    """Translate driver errors raised inside the block into pgjobs errors.

    Connection failures become `DatabaseUnavailable`; with `schema` given, a
    missing procrastinate function, table or type becomes `SchemaError`.
    """
    try:
        yield
    except Exception as exc:
        driver_error = _driver_error(exc)
        if isinstance(driver_error, _CONNECTION_ERRORS):
            raise unavailable(dsn, driver_error) from exc
        state = getattr(driver_error, "sqlstate", None)
        if schema is not None and state in _MISSING_SCHEMA_STATES:
            raise _missing_schema(dsn, schema) from exc
        raise


@contextlib.asynccontextmanager
async def connection(
    pool: psycopg_pool.AsyncConnectionPool, dsn: str
) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """Borrow a pooled connection, translating connection failures."""
    with translate_errors(dsn):
        async with pool.connection() as conn:
            yield conn

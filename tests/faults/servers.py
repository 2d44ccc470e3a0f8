"""Throwaway servers for the fault tests: a PostgreSQL cluster and PgBouncer.

Both listen on a free loopback port and keep every file in a temporary
folder that `cleanup()` removes. PostgreSQL and PgBouncer refuse to run as
root, so as root they run as the `postgres` OS user through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]
PGBOUNCER_PATHS = [Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")]
SERVICE_USER = "postgres"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_pg_bin() -> Path | None:
    """Return the folder of Debian's PostgreSQL server binaries, if installed."""
    for folder in PG_BIN_DIRS:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def find_pgbouncer() -> Path | None:
    """Return the path of the pgbouncer binary, if installed."""
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    return next((path for path in PGBOUNCER_PATHS if path.exists()), None)


def _as_service_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _make_owned_folder(prefix: str) -> Path:
    # /tmp entries made by root are not readable by the service user; the
    # folder is handed over to it before the server writes there.
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVICE_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    folder.chmod(0o700)
    return folder


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVICE_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


def wait_until_accepting(dsn: str, *, timeout: float = 30.0) -> None:
    """Block until a connection to `dsn` succeeds; raise after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class TempCluster:
    """A PostgreSQL cluster of its own, made with initdb in a temporary folder.

    Tests may stop and start it at will; nothing else uses it.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = _make_owned_folder("pgjobs-cluster-")
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.port = free_port()
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    def _run(self, command: list[str]) -> None:
        subprocess.run(
            _as_service_user(command),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
        )

    def dsn(self, database: str = "postgres") -> str:
        """Return the connection string of `database` on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        # A fast shutdown waits for every session to end, including one whose
        # client opened a socket but sent no startup packet yet; such a
        # session lasts up to authentication_timeout (60 s by default).
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c max_connections=200 -c authentication_timeout=5s"
        )
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "start",
            ]
        )
        wait_until_accepting(self.dsn())

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `fast` ends every session, as a restart does."""
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "stop",
            ]
        )

    def running(self) -> bool:
        """Tell whether the server process is up."""
        result = subprocess.run(
            _as_service_user(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0

    def cleanup(self) -> None:
        """Stop the server if it runs and delete every file of the cluster."""
        if self.data_dir.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PgBouncer:
    """A PgBouncer process in transaction pooling mode, in front of a server.

    Every database name is forwarded to the server at `server_port`, with
    `trust` authentication, as the test servers use.
    """

    def __init__(
        self,
        binary: Path,
        *,
        server_port: int,
        pool_size: int = 20,
        ignore_startup_parameters: str = "extra_float_digits",
        database_options: str = "",
    ) -> None:
        self.binary = binary
        self.root = _make_owned_folder("pgjobs-pgbouncer-")
        self.port = free_port()
        self.config_file = self.root / "pgbouncer.ini"
        self.log_file = self.root / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None
        users = self.root / "userlist.txt"
        users.write_text('"postgres" ""\n')
        _chown(users)
        self.config_file.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port} {database_options}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            f"ignore_startup_parameters = {ignore_startup_parameters}\n"
            f"logfile = {self.log_file}\n"
            "server_check_delay = 1\n"
        )
        _chown(self.config_file)

    def dsn(self, database: str) -> str:
        """Return the connection string of `database` through PgBouncer."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start PgBouncer and wait until it accepts connections."""
        self._process = subprocess.Popen(
            _as_service_user([str(self.binary), str(self.config_file)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
        )
        deadline = time.monotonic() + 20
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self._process.returncode}: "
                    f"{self.log_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log_text(self) -> str:
        """Return PgBouncer's log so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        """Stop PgBouncer (started by this object) and delete its files."""
        process = self._process
        if process is not None and process.poll() is None:
            # runuser passes SIGTERM on to pgbouncer.
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

"""A throwaway PostgreSQL cluster on 127.0.0.1, for the database tests and the docs' examples.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port with the unix
socket in that directory, ``pg_ctl stop`` at the end. PostgreSQL refuses to run as root: as root
the cluster belongs to the ``postgres`` user (Debian's package creates it), run through
``runuser``. Every statement is logged (``log_statement = all``), so a test can tell whether a
statement ever reached the server.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.serve import free_port

MISSING = "PostgreSQL is not installed (initdb and pg_ctl not found; apt-get install postgresql)"
#: The unprivileged user a root test process runs the cluster as.
USER = "postgres"


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its DSN and its log (``log_statement = all``)."""

    port: int
    directory: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    @property
    def log(self) -> Path:
        return self.directory / "postgresql.log"

    def logged_statements(self, text: str) -> list[str]:
        """The lines of the server log that hold ``text``: a statement's text or, for one sent
        with parameters, its ``DETAIL: parameters:`` line."""
        return [line for line in self.log.read_text(errors="replace").splitlines() if text in line]


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH), or None."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def cluster(bin_dir: Path) -> Iterator[Cluster]:
    """Start a fresh cluster; stop it and remove its directory on exit (also if it failed to
    start)."""
    directory = Path(tempfile.mkdtemp(prefix="fastapi-abort-pg-"))
    try:
        with _started(bin_dir, directory) as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _started(bin_dir: Path, directory: Path) -> Iterator[Cluster]:
    if os.geteuid() == 0:
        shutil.chown(directory, USER)
    data = directory / "data"
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        _as_owner(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync"]
        ),
        **run,  # type: ignore[call-overload]
    )
    port = free_port()
    settings = {
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{directory}'",
        "fsync": "off",
        "log_statement": "'all'",
        "log_line_prefix": "'%m [%p] '",
    }
    # In the configuration file rather than on pg_ctl's command line, which a shell splits.
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
    log = directory / "postgresql.log"
    pg_ctl = str(bin_dir / "pg_ctl")
    subprocess.run(
        _as_owner([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]),
        **run,  # type: ignore[call-overload]
    )
    try:
        yield Cluster(port, directory)
    finally:
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"]),
            **run,  # type: ignore[call-overload]
        )

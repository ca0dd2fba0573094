"""A private PostgreSQL server for tests, on 127.0.0.1 and a free high port, with password authentication.

Recipe: /work/shared/notes/real-infra.md ("A private PostgreSQL server"). Debian's `postgresql` package: the server
refuses to run as root, so the cluster belongs to the `postgres` user the package creates. Password (scram) auth is
kept on, so a test can check the password reaches Dagster's run workers by environment and nowhere else.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.infra.sshd import InfraError, free_port

PG_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    root: Path
    bin_dir: Path
    host: str
    port: int
    user: str
    password: str
    db_name: str

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads its storage settings from."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host,
            "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": self.db_name,
        }

    def stop(self) -> None:
        _as_postgres(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"], check=False
        )


def _bin_dir() -> Path:
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise InfraError(f"no PostgreSQL server under {PG_ROOT}: run .ci/install-system-deps.sh (package postgresql)")
    return versions[-1]


def _as_postgres(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    account = pwd.getpwnam("postgres")

    def drop() -> None:
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    proc = subprocess.run(
        argv,
        preexec_fn=drop,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )
    if check and proc.returncode != 0:
        raise InfraError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def start_postgres(root: Path, db_name: str = "dagster") -> PostgresServer:
    """initdb, start and create ``db_name`` under ``root`` (owned by the postgres user); stop() ends it."""
    if os.geteuid() != 0:
        raise InfraError("the PostgreSQL fixture needs root (it runs the server as the postgres user)")
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise InfraError("no postgres user: run .ci/install-system-deps.sh (package postgresql)") from None
    bin_dir = _bin_dir()
    root.mkdir(parents=True, exist_ok=True)
    blocked = [p for p in root.parents if not os.stat(p).st_mode & 0o001]
    if blocked:
        raise InfraError(f"the postgres user cannot reach {root}: {blocked[0]} is not traversable (chmod o+x)")
    os.chown(root, account.pw_uid, account.pw_gid)
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, account.pw_uid, account.pw_gid)
    pwfile.chmod(0o600)
    user, port = "dagster", free_port()
    _as_postgres(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-A",
            "scram-sha-256",
            "-U",
            user,
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
        ]
    )
    pwfile.unlink()
    _as_postgres(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-l",
            str(root / "postgres.log"),
            "-o",
            f"-p {port} -k {root} -h 127.0.0.1",
            "start",
        ]
    )
    server = PostgresServer(
        root=root, bin_dir=bin_dir, host="127.0.0.1", port=port, user=user, password=password, db_name=db_name
    )
    psql = shutil.which("psql") or str(bin_dir / "psql")
    created = subprocess.run(
        [
            psql,
            "-h",
            server.host,
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'create database "{db_name}"',
        ],
        env={**os.environ, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    if created.returncode != 0:
        server.stop()
        raise InfraError(f"could not create database {db_name}: {created.stderr.strip()}")
    return server

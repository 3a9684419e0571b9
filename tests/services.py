"""Make sure the services the test suite needs are up (run by `make test`).

    python tests/services.py postgres

Starts the local PostgreSQL cluster if it is installed but stopped, and creates
the database ``test`` if it is missing. It never stops anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def postgres() -> int:
    if os.environ.get("UNIONCARD_TEST_PG"):
        return 0  # the caller points the tests at a server of its own
    if shutil.which("pg_isready") is None:
        print("services: PostgreSQL client tools missing (apt-get install postgresql)")
        return 1
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode != 0:
        versions = sorted(p.name for p in Path("/etc/postgresql").glob("*"))
        if not versions:
            print("services: no PostgreSQL cluster found in /etc/postgresql")
            return 1
        print(f"services: starting PostgreSQL {versions[-1]}")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=False,
        )
        for _ in range(50):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
                break
            time.sleep(0.2)
    exists = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'test'",
        ],
        capture_output=True,
        text=True,
    )
    if exists.returncode == 0 and exists.stdout.strip() != "1":
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "test"], check=False)
    return 0


if __name__ == "__main__":
    names = sys.argv[1:] or ["postgres"]
    sys.exit(max({"postgres": postgres}[n]() for n in names))

"""Starting the project's local services from Python: the test suite and the benchmarks.

Each caller runs its own stack (its own state folder and ports, see
``include/stack/env.sh``), so a ``make run`` stack keeps running beside it.
"""

from __future__ import annotations

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACK = os.path.join(ROOT, "include", "stack", "stack.sh")


def environment(overrides: dict[str, str]) -> dict[str, str]:
    """The stack's environment (``env.sh``) with ``overrides``, free of the caller's own
    ls4, Airflow, GDAL and AWS settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LS4_", "AIRFLOW", "GDAL_", "AWS_"))}
    clean.update(overrides)
    output = subprocess.run(["bash", "-c", f'. "{ROOT}/include/stack/env.sh" && env -0'],
                            env=clean, check=True, capture_output=True).stdout.decode()
    return dict(item.split("=", 1) for item in output.split("\0") if "=" in item)


def use(overrides: dict[str, str]) -> None:
    """Make this process talk to the stack of ``overrides`` (before anything imports Airflow,
    which reads its configuration at import)."""
    for name in [k for k in os.environ if k.startswith(("LS4_", "AIRFLOW", "AWS_"))]:
        del os.environ[name]
    os.environ.update(environment(overrides))


def start(services: list[str]) -> None:
    subprocess.run([STACK, "start", *services], check=True)


def stop(services: list[str]) -> None:
    subprocess.run([STACK, "stop", *services], check=False)


def postgis_engine():
    """A SQLAlchemy engine on the stack's PostGIS, as the ``LS4_PG_*`` variables describe it."""
    from sqlalchemy import create_engine

    from ls4_ops.settings import postgis_url

    return create_engine(postgis_url())

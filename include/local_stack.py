"""Starting the project's local services from Python: the test suite and the benchmarks.

Each caller runs its own stack (its own state folder and ports, see
``include/stack/env.sh``), so a ``make run`` stack keeps running beside it.
"""

from __future__ import annotations

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACK = os.path.join(ROOT, "include", "stack", "stack.sh")


def bench_stack(name: str, first_port: int) -> dict[str, str]:
    """A benchmark's own stack: state in ``.state/<name>``, the S3 emulator, PostGIS, MapServer
    and Airflow on four ports from ``first_port``. Keep it below Linux's ephemeral range
    (32768-60999), where an outgoing connection can hold any port at any moment."""
    return {
        "LS4_STATE_DIR": os.path.join(ROOT, ".state", name),
        "LS4_S3_ENDPOINT": f"http://127.0.0.1:{first_port}",
        "LS4_PG_PORT": str(first_port + 1),
        "LS4_WMS_PORT": str(first_port + 2),
        "LS4_AIRFLOW_PORT": str(first_port + 3),
    }


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

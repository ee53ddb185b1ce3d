"""Airflow's API server alone (no scheduler) on the test stack, for tests that talk to its REST API
or look into its processes."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration import pipeline

STARTUP_SECONDS = 180
WORKERS = 2


def airflow_bin() -> str:
    return os.path.join(os.environ["LS4_VENV"], "bin", "airflow")


def health_url() -> str:
    return f"http://127.0.0.1:{os.environ['LS4_AIRFLOW_PORT']}/api/v2/monitor/health"


def answers() -> bool:
    try:
        with urllib.request.urlopen(health_url(), timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def serialize_dags() -> None:
    """Write the DAG folder's DAGs into the metadata database, as the DAG processor would: the API
    server only knows DAGs from there."""
    subprocess.run([airflow_bin(), "dags", "reserialize"], check=True, capture_output=True)


@contextmanager
def api_server() -> Iterator[int]:
    """``airflow api-server`` with two workers on ``LS4_AIRFLOW_PORT``, until it answers; its pid.
    Stopped (its whole process group) afterwards."""
    assert not answers(), f"something answers at {health_url()} already"
    log_path = os.path.join(os.environ["LS4_STATE_DIR"], "log", "api-server.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [airflow_bin(), "api-server", "--host", "127.0.0.1", "--port", os.environ["LS4_AIRFLOW_PORT"],
             "--workers", str(WORKERS)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pipeline.wait_until(f"the API server at {health_url()} (log {log_path})",
                            lambda: process.poll() is None and answers() or process.poll() is not None,
                            STARTUP_SECONDS, interval=1)
        assert process.poll() is None, f"airflow api-server exited with {process.returncode}; see {log_path}"
        yield process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

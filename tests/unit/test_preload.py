"""The processes that fork Airflow's task processes preload ls4's heavy modules; the others
(API server, DAG processor, triggerer) do not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ls4_ops import preload

START = """
import json, sys
sys.argv = json.loads(sys.argv[1])
import airflow.settings
print(json.dumps({name: name in sys.modules for name in ("rasterio", "ls4_ops.raster", "boto3")}))
"""


@pytest.mark.parametrize("argv, forks", [
    (["airflow", "scheduler"], True),
    (["airflow", "celery", "worker", "--queues", "raster"], True),
    (["airflow", "api-server"], False),
    (["airflow", "dag-processor"], False),
    (["airflow", "triggerer"], False),
    (["airflow", "celery", "flower"], False),
    (["airflow", "standalone"], False),  # it starts `airflow scheduler`, which preloads
])
def test_only_the_scheduler_and_celery_workers_fork_task_processes(argv, forks):
    assert preload.forks_tasks(argv) is forks


@pytest.mark.parametrize("command, loaded", [("scheduler", True), ("api-server", False)])
def test_airflow_start_up_preloads_the_task_modules_only_where_tasks_are_forked(tmp_path, command, loaded):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    output = subprocess.run([sys.executable, "-c", START, json.dumps(["airflow", command])], env=env, check=True,
                            capture_output=True, text=True).stdout
    assert json.loads(output.strip().splitlines()[-1]) == dict.fromkeys(("rasterio", "ls4_ops.raster", "boto3"), loaded)


def test_every_preloaded_module_imports_without_airflow():
    # They are imported while Airflow reads its settings: none may need Airflow itself.
    code = ("import sys; from ls4_ops import preload; assert preload.import_task_modules() == "
            "list(preload.TASK_MODULES); print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))")
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.strip() == "[]"

"""Airflow imports this module at start-up in each of its processes (on sys.path through
the plugins folder). In those that fork task processes it preloads what ls4's tasks
import (see ``ls4_ops.preload``); elsewhere (API server, DAG processor, triggerer) it
does nothing."""

import sys as _sys

from ls4_ops import preload as _preload

# Airflow copies every public name of this module into airflow.settings: export none.
__all__: list[str] = []

if _preload.forks_tasks(_sys.argv):
    _preload.import_task_modules()

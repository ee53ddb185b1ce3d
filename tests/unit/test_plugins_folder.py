"""Airflow's plugins manager imports no module of ls4_ops from the plugins folder.

It would import every ``.py`` under it as a top-level module (``raster``,
``tileindex``, ...), in the API server and the scheduler too: rasterio and
geopandas loaded where nothing uses them, and second copies of ls4's modules.
``plugins/.airflowignore`` keeps it out; DAG files and tasks import the
package as ``ls4_ops``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(ROOT, "plugins")

LOAD_PLUGINS = """
import json, sys
from airflow import plugins_manager
before = set(sys.modules)
plugins_manager.ensure_plugins_loaded()
plugins, errors = plugins_manager._get_plugins()
loaded = [name for name in set(sys.modules) - before
          if (getattr(sys.modules[name], "__file__", None) or "").startswith(sys.argv[1])]
print(json.dumps({"loaded": sorted(loaded), "plugins": [p.name for p in plugins], "errors": list(errors),
                  "rasterio": "rasterio" in sys.modules}))
"""


def test_the_plugins_folders_ignore_file_leaves_no_python_file_to_import():
    from airflow._shared.module_loading.file_discovery import find_path_from_directory

    found = [path for path in find_path_from_directory(PLUGINS, ".airflowignore", "glob") if path.endswith(".py")]
    assert found == []


def test_the_plugins_manager_imports_no_ls4_module_and_no_rasterio(tmp_path):
    # A fresh interpreter: this one has imported ls4_ops already.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__PLUGINS_FOLDER=PLUGINS,
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    output = subprocess.run([sys.executable, "-c", LOAD_PLUGINS, PLUGINS], env=env, check=True,
                            capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    assert result == {"loaded": [], "plugins": [], "errors": [], "rasterio": False}


def test_ls4_ops_is_imported_from_the_plugins_folder_without_pythonpath():
    # The venv's editable install points into plugins/: DAG files, tasks and the ls4
    # command run the same code, with or without the plugins folder on sys.path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import ls4_ops.layout; print(ls4_ops.layout.__file__)"
    output = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", check=True,
                            capture_output=True, text=True).stdout
    assert output.strip() == os.path.join(PLUGINS, "ls4_ops", "layout.py")

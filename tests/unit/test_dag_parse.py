"""What parsing the DAG folder costs: no library that only tasks need is imported, no lasting side effect."""

import gc
import json
import os
import subprocess
import sys
import weakref
from datetime import timedelta

from ls4_ops import registry
from ls4_ops.layout import parse_key
from ls4_ops.operators.collection_dags import SHARDS, dag_file_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each of these adds tenths of a second to every parse of the DAG folder. boto3 is not
# among them: the design's S3KeySensor imports it (through the provider's S3Hook).
TASK_ONLY = ("psycopg", "airflow.providers.postgres.hooks", "airflow.providers.common.sql", "rasterio",
             "geopandas", "mappyfile", "shapely", "numpy", "pyproj")

# Modules that parsing the folder adds to those Airflow has loaded already.
PARSE = """
import gc, json, os, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1], safe_mode=True)
print(json.dumps({"dags": sorted(bag.dags), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "files": {dag_id: os.path.basename(dag.fileloc) for dag_id, dag in bag.dags.items()},
                  "modules": sorted(set(sys.modules) - before), "gc_enabled": gc.isenabled()}))
"""


TWO_COLLECTIONS = [parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection,
                   parse_key("bw/travis/usda_1951/index/georef/x.tif").collection]


def parse_dag_folder(tmp_path, collections=TWO_COLLECTIONS, **env) -> dict:
    """The DAG folder as the DAG processor parses it (with the test stack's settings: upload events on)."""
    path = str(tmp_path / "registry.json")
    registry.save(path, collections)
    output = subprocess.run([sys.executable, "-c", PARSE, os.path.join(ROOT, "dags")],
                            env=dict(os.environ, LS4_REGISTRY=path, **env), check=True,
                            capture_output=True, text=True).stdout
    parsed = json.loads(output.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    return parsed


def test_dag_folder_parses_without_task_only_libraries(tmp_path):
    parsed = parse_dag_folder(tmp_path)
    assert parsed["dags"] == ["ls4_anderson_ams_1960_frames", "ls4_compiled_index", "ls4_discovery",
                              "ls4_maintenance", "ls4_travis_usda_1951_index", "ls4_uploads"]
    assert "ls4_ops.operators" in parsed["modules"]
    assert [name for name in parsed["modules"] if name.startswith(TASK_ONLY)] == []
    # The factory pauses the garbage collector while it builds, and only then.
    assert parsed["gc_enabled"]


def test_each_collection_dag_is_built_by_the_dag_file_of_its_shard(tmp_path):
    shard_files = sorted(name for name in os.listdir(os.path.join(ROOT, "dags")) if name.startswith("ls4_collections"))
    assert shard_files == sorted(f"ls4_collections_{shard}.py" for shard in range(SHARDS))
    collections = [parse_key(f"nc/county{i}/ams_19{i:02d}/frames/georef/x.tif").collection for i in range(40)]
    files = parse_dag_folder(tmp_path, collections)["files"]
    built = {dag_id: file for dag_id, file in files.items() if dag_id.startswith("ls4_county")}
    assert built == {c.dag_id: f"{dag_file_module(c.dag_id)}.py" for c in collections}
    assert len(set(built.values())) > SHARDS // 2  # spread over the files, not all in one


def test_the_upload_router_exists_only_where_the_bucket_sends_events(tmp_path):
    with_events = parse_dag_folder(tmp_path, LS4_UPLOAD_QUEUE="http://127.0.0.1:9000/123456789012/ls4-uploads")
    assert "ls4_uploads" in with_events["dags"]
    assert [name for name in with_events["modules"] if name.startswith(TASK_ONLY)] == []
    assert "ls4_uploads" not in parse_dag_folder(tmp_path, LS4_UPLOAD_QUEUE="")["dags"]


def test_a_task_builds_only_its_own_collection_dag(tmp_path):
    """Before a task runs, Airflow parses its DAG file with the DAG id in the parsing context."""
    parsed = parse_dag_folder(tmp_path, _AIRFLOW_PARSING_CONTEXT_DAG_ID="ls4_travis_usda_1951_index")
    assert parsed["dags"] == ["ls4_compiled_index", "ls4_discovery", "ls4_maintenance", "ls4_travis_usda_1951_index",
                              "ls4_uploads"]


def test_runs_of_a_collection_never_overlap_and_its_index_waits_for_plan_and_every_frame():
    from ls4_ops.operators.collection_dags import collection_dag
    from ls4_ops.settings import Settings

    dag = collection_dag(parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection, Settings())
    assert dag.max_active_runs == 1
    # A failed frame must not keep the others out of the index; a failed plan fails the run.
    assert dag.get_task("frames_done").upstream_task_ids == {"frame.cog"}
    assert dag.get_task("frames_done").trigger_rule == "all_done"
    index = dag.get_task("tile_index")
    assert index.upstream_task_ids == {"plan", "frames_done"}
    assert index.trigger_rule == "all_success"
    assert dag.get_task("collection_overview").upstream_task_ids == {"tile_index"}
    assert dag.get_task("mapfile").upstream_task_ids == {"tile_index", "collection_overview"}
    assert dag.get_task("wms_served").upstream_task_ids == {"mapfile"}


def test_a_frame_goes_on_to_its_cog_before_more_uploads_are_compressed():
    from ls4_ops.operators.collection_dags import collection_dag
    from ls4_ops.settings import Settings

    dag = collection_dag(parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection, Settings())
    # Weighted by their upstream tasks, later stages outrank earlier ones in the queue.
    assert {dag.get_task(f"frame.{stage}").weight_rule for stage in ("compress", "overviews", "cog")} == {"upstream"}


def test_every_task_has_a_time_limit_sized_to_its_work(tmp_path, monkeypatch):
    """A task that hangs (a huge or hostile file, a stuck connection) fails and frees its worker."""
    from airflow.dag_processing.dagbag import DagBag

    path = str(tmp_path / "registry.json")
    registry.save(path, [parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection])
    monkeypatch.setenv("LS4_REGISTRY", path)
    bag = DagBag(dag_folder=os.path.join(ROOT, "dags"), safe_mode=True)
    limits = {(dag_id, task.task_id): task.execution_timeout for dag_id, dag in bag.dags.items()
              for task in dag.tasks if task.task_id not in ("frames_done", "wait_for_georef")}
    assert len(limits) > 10 and all(limits.values()), [task for task, limit in limits.items() if not limit]
    collection = "ls4_anderson_ams_1960_frames"
    assert limits[(collection, "frame.compress")] == limits[(collection, "frame.cog")] == timedelta(minutes=30)
    assert limits[(collection, "wms_served")] < limits[(collection, "collection_overview")]
    # The sensor has its own: how long it waits for an upload.
    assert bag.dags[collection].get_task("wait_for_georef").timeout == 300


def test_a_process_that_parses_again_and_again_frees_the_dags_of_its_earlier_parses(monkeypatch):
    """The factory freezes what it built (out of the cyclic collector's view); past a bound, a
    later parse gives it back to the collector, so a test session or ``dag.test()`` loop does not grow."""
    from ls4_ops.operators import collection_dags
    from ls4_ops.settings import Settings

    monkeypatch.setattr(collection_dags, "FROZEN_AT_MOST", 0)
    with collection_dags.garbage_collection_paused():
        earlier = weakref.ref(collection_dags.collection_dag(TWO_COLLECTIONS[0], Settings()))
    assert gc.get_freeze_count() > 0 and earlier() is not None  # a DAG is a cycle: only the collector frees it
    with collection_dags.garbage_collection_paused():
        pass
    assert earlier() is None
    gc.unfreeze()

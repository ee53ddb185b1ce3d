"""The registry where every host reaches it: discovery writes it to PostGIS, and a DAG
processor elsewhere (another working directory, its own copy of the registry) builds the
same collections' DAGs, keeps them through a PostGIS outage, and two writers at once never
give one name to two folders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text

from include import local_stack
from ls4_ops import registry
from ls4_ops.layout import parse_key
from tests.integration import pipeline

pytestmark = pytest.mark.usefixtures("airflow_db")

KEY = "nc/registryville/usda_1962/frames/georef/19620101_1-1.tif"
COLLECTION = parse_key(KEY).collection
# The DAG processor's parse of the DAG folder, in whatever directory it runs.
PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=True)
print(json.dumps({"dags": sorted(bag.dags), "errors": {k: str(v) for k, v in bag.import_errors.items()}}))
"""


def dag_processor_parse(cwd, **env) -> list[str]:
    """The DAG ids a DAG processor running in ``cwd`` builds (its copy: ``cwd/registry.json``)."""
    output = subprocess.run([sys.executable, "-c", PARSE, os.environ["AIRFLOW__CORE__DAGS_FOLDER"]], cwd=cwd,
                            env={**os.environ, "LS4_REGISTRY": "registry.json", **env}, check=True,
                            capture_output=True, text=True, timeout=120).stdout
    parsed = json.loads(output.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    return parsed["dags"]


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def unregister(*names: str) -> None:
    with local_stack.postgis_engine().begin() as connection:
        connection.execute(text(f"DELETE FROM {registry.TABLE} WHERE name = ANY(:names)"), {"names": list(names)})


@pytest.fixture
def registered_elsewhere(services, tmp_path, monkeypatch):
    """KEY's collection registered by a discovery run in a directory of its own, with its own copy."""
    discovery = tmp_path / "discovery"
    discovery.mkdir()
    monkeypatch.chdir(discovery)
    monkeypatch.setenv("LS4_REGISTRY", "registry.json")
    frame = tmp_path / "frame.tif"
    frame.write_bytes(b"II*\x00 not read by discovery")
    pipeline.upload(str(frame), KEY)
    try:
        assert COLLECTION.name in pipeline.discover()
        assert COLLECTION.name in registry.load(str(discovery / "registry.json"))
        monkeypatch.undo()
        yield
    finally:
        pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=KEY)
        unregister(COLLECTION.name)


def test_a_dag_processor_elsewhere_builds_the_dags_discovery_registered_and_keeps_them_through_an_outage(
        registered_elsewhere, tmp_path):
    processor = tmp_path / "dag-processor"
    processor.mkdir()
    assert COLLECTION.dag_id in dag_processor_parse(processor)
    assert COLLECTION.name in registry.load(str(processor / "registry.json"))
    # PostGIS gone, and the copy due for a refresh at every parse: the DAG stays.
    assert COLLECTION.dag_id in dag_processor_parse(processor, LS4_PG_PORT=closed_port(), LS4_REGISTRY_MAX_AGE_S="0")
    # A host with neither a copy nor PostGIS has nothing to build from: this is what was kept.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert COLLECTION.dag_id not in dag_processor_parse(fresh, LS4_PG_PORT=closed_port())


def test_the_registry_of_a_local_file_goes_into_postgis_when_postgis_has_none_yet(services, tmp_path):
    before = registry.Collection.from_dict(COLLECTION.to_dict())
    new = parse_key("bw/otherville/usda_1962/frames/georef/19620101_1.tif").collection
    cache = str(tmp_path / "registry.json")
    registry.save(cache, [before])
    with local_stack.postgis_engine().connect() as connection, connection.begin() as transaction:
        connection.execute(text(f"DROP TABLE IF EXISTS {registry.TABLE}"))
        found, registered = registry.update(connection, cache, lambda known: registry.decide(known, [new], []))
        assert found.new == [new.name] and set(registered) == {before.name, new.name}
        assert registry.fetch(connection) == {before.name: before, new.name: new}
        transaction.rollback()  # the session's registry as it was


def test_two_writers_at_once_never_register_two_folders_under_one_name(services):
    first = parse_key("bw/lockville/usda_1962/frames/georef/19620101_1.tif").collection
    second = parse_key("nc/lockville/usda_1962/frames/georef/19620101_1.tif").collection
    assert first.name == second.name and first != second
    engine = local_stack.postgis_engine()
    outcome = {}

    def second_writer():
        with engine.begin() as connection:
            outcome["found"], outcome["registered"] = registry.update(
                connection, "unused.json", lambda known: registry.decide(known, [second], []))
    try:
        with engine.begin() as connection:
            found, _ = registry.update(connection, "unused.json", lambda known: registry.decide(known, [first], []))
            assert found.new == [first.name]
            writer = threading.Thread(target=second_writer)
            writer.start()
            writer.join(timeout=2)
            assert writer.is_alive()  # waits for the first writer's transaction
        writer.join(timeout=30)
        assert outcome["found"].new == [] and outcome["registered"][first.name] == first
        with engine.connect() as connection:
            assert registry.fetch(connection)[first.name] == first
    finally:
        unregister(first.name)

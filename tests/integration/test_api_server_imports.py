"""The API server (and so the scheduler, which loads plugins the same way) maps no rasterio and no GDAL:
Airflow's plugins manager imports none of ls4's modules (``plugins/.airflowignore``)."""

from __future__ import annotations

import os
import re

from tests.integration import pipeline
from tests.integration.api_server import WORKERS, api_server

# rasterio's wheel bundles its GDAL (rasterio.libs/libgdal-*.so); pyogrio (geopandas) its own.
GEOSPATIAL_LIBRARY = re.compile(r"rasterio|gdal|pyogrio|geopandas|fiona", re.IGNORECASE)


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children(current)
    return tree


def mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as handle:
        return {line.split(maxsplit=5)[5].strip() for line in handle if len(line.split(maxsplit=5)) == 6}


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode()


def test_the_api_server_and_its_workers_map_no_rasterio_or_gdal(services, airflow_db):
    with api_server() as pid:
        def workers() -> list[int]:
            return [p for p in process_tree(pid) if "spawn_main" in command_line(p)]
        # Each worker builds the app (and loads the plugins) before it serves; wait until all are
        # up and none maps anything new any more.
        pipeline.wait_until(f"{WORKERS} API server workers", lambda: len(workers()) == WORKERS, 60, interval=1)
        sizes: dict[int, int] = {}

        def settled() -> bool:
            now = {p: len(mapped_files(p)) for p in process_tree(pid)}
            done = now == sizes
            sizes.clear()
            sizes.update(now)
            return done
        pipeline.wait_until("the API server's processes done loading libraries", settled, 60, interval=2)
        files = {f"{p} {command_line(p)[:70]}": mapped_files(p) for p in process_tree(pid)}
    # The check sees what the workers loaded: the app's own compiled libraries are there.
    assert all(any("pydantic_core" in f for f in mapped) for name, mapped in files.items() if "spawn_main" in name)
    geospatial = {name: sorted(f for f in mapped if GEOSPATIAL_LIBRARY.search(f)) for name, mapped in files.items()}
    assert geospatial == {name: [] for name in files}

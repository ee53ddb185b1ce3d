"""How long Airflow takes to parse the DAG folder with many registered collections.

Registers N collections in a scratch registry, then parses the DAG folder
with Airflow's DagBag in a fresh process (as the DAG processor does), best
of a few rounds. Ends with: ``parse: collections=<n> seconds=<s>``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plugins"))

from ls4_ops import registry  # noqa: E402
from ls4_ops.layout import Collection  # noqa: E402

PARSE = """
import time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder={folder!r}, safe_mode=True)
elapsed = time.perf_counter() - start
assert not bag.import_errors, bag.import_errors
print(len(bag.dags), elapsed)
"""


def scratch_collections(count: int) -> list[Collection]:
    types = ("frames", "index", "mosaic")
    return [Collection("nc" if i % 2 else "bw", f"county{i // 6}", "ams" if i % 3 else "usda", str(1940 + i % 50),
                       types[i % 3]) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(ROOT, "dags"))
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "registry.json")
        collections = scratch_collections(args.collections)
        registry.save(path, collections)
        assert len(registry.load(path)) == args.collections
        env = dict(os.environ, LS4_REGISTRY=path, AIRFLOW_HOME=os.path.join(scratch, "airflow"))
        times = []
        for _ in range(args.rounds):
            output = subprocess.run([sys.executable, "-c", PARSE.format(folder=folder)], env=env, check=True,
                                    capture_output=True, text=True).stdout.split()
            dags, seconds = int(output[-2]), float(output[-1])
            assert dags == args.collections + 1, f"{dags} DAGs parsed"
            times.append(seconds)
            print(f"round: dags={dags} seconds={seconds:.3f}")
    print(f"parse: collections={args.collections} seconds={min(times):.3f}")


if __name__ == "__main__":
    main()

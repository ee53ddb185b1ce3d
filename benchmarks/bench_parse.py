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
print(len(bag.dags), max(len(dag.tasks) for dag in bag.dags.values()), elapsed)
"""


# Baseline: the same number of DAGs with the same number of tasks, but empty
# operators and nothing else: what Airflow itself costs to parse.
BASELINE_DAGS = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
for i in range({count}):
    with DAG(f"baseline_{{i}}", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        tasks = [EmptyOperator(task_id=f"t{{j}}") for j in range({tasks})]
        for upstream, downstream in zip(tasks, tasks[1:]):
            upstream >> downstream
    globals()[dag.dag_id] = dag
"""
# The DAG folder's other DAGs: discovery, the compiled index, maintenance, the upload router (the stack has a queue).
BUCKET_WIDE_DAGS = 4


def parse_seconds(folder: str, env: dict, expected_dags: int, rounds: int) -> tuple[float, int]:
    """Best parse time of the folder, and the most tasks a DAG of it has."""
    times = []
    for _ in range(rounds):
        output = subprocess.run([sys.executable, "-c", PARSE.format(folder=folder)], env=env, check=True,
                                capture_output=True, text=True).stdout.split()
        dags, tasks, seconds = int(output[-3]), int(output[-2]), float(output[-1])
        assert dags == expected_dags, f"{dags} DAGs parsed, expected {expected_dags}"
        times.append(seconds)
    return min(times), tasks


def scratch_collections(count: int) -> list[Collection]:
    types = ("frames", "index", "mosaic")
    return [Collection("nc" if i % 2 else "bw", f"county{i // 6}", "ams" if i % 3 else "usda", str(1940 + i % 50),
                       types[i % 3]) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(ROOT, "dags"))
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "registry.json")
        collections = scratch_collections(args.collections)
        registry.save(path, collections)
        assert len(registry.load(path)) == args.collections
        env = dict(os.environ, LS4_REGISTRY=path, AIRFLOW_HOME=os.path.join(scratch, "airflow"))
        ls4, tasks_per_collection = parse_seconds(folder, env, args.collections + BUCKET_WIDE_DAGS, args.rounds)
        # Before each task, Airflow parses its DAG file again with the DAG id in
        # the parsing context; the factory then builds that one DAG.
        task_env = dict(env, _AIRFLOW_PARSING_CONTEXT_DAG_ID=collections[0].dag_id)
        task, _ = parse_seconds(folder, task_env, 1 + BUCKET_WIDE_DAGS, args.rounds)
        baseline_folder = os.path.join(scratch, "baseline")
        os.makedirs(baseline_folder)
        with open(os.path.join(baseline_folder, "baseline_dags.py"), "w") as handle:
            handle.write(BASELINE_DAGS.format(count=args.collections, tasks=tasks_per_collection))
        baseline, _ = parse_seconds(baseline_folder, env, args.collections, args.rounds)
    print(f"| DAG folder | DAGs | tasks each | parse s (best of {args.rounds}) |")
    print("|---|---|---|---|")
    print(f"| ls4 (`dags/`) | {args.collections} + {BUCKET_WIDE_DAGS} bucket-wide | {tasks_per_collection} | {ls4:.2f} |")
    print(f"| ls4, parsed for one task (parsing context) | 1 + {BUCKET_WIDE_DAGS} bucket-wide | {tasks_per_collection} | {task:.2f} |")
    print(f"| EmptyOperator baseline | {args.collections} | {tasks_per_collection} | {baseline:.2f} |")
    print(f"ls4/baseline={ls4 / baseline:.2f}")
    print(f"parse: collections={args.collections} seconds={ls4:.3f}")


if __name__ == "__main__":
    main()

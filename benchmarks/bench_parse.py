"""What parsing ls4's DAG folder costs with many registered collections, against
what Airflow itself costs for as many DAGs of as many tasks.

Registers N collections in a scratch registry. The baseline is a folder of as
many DAG files as ls4 has collection DAG files, N DAGs in all, each a chain of
EmptyOperators as long as a collection DAG, and nothing else. Two measures,
ls4 and baseline in the same run:

1. DagBag: each folder parsed by Airflow's DagBag in a fresh process, best of
   a few rounds; the rounds of ls4 and of the baseline alternate, so a change
   in the machine's load falls on both. Also ls4's folder parsed for one task
   (Airflow's parsing context), as before every task.
2. The DAG processor: ``airflow dag-processor --num-runs 1`` on a scratch
   metadata database (SQLite), as deployed: each DAG file parsed and
   serialized in a child process of its own, killed after
   ``dag_file_processor_timeout`` (50 s). A file's time is Airflow's own
   record of it (``dag.last_parse_duration``: from the start of the child to
   its result in the manager). Peak RSS of the manager (which writes the
   results to the database) and of the largest child, sampled every 20 ms.

Ends with:
``parse: collections=<n> seconds=<s> ratio=<r> processor_s=<p> processor_ratio=<q> processor_file_s=<f> rss_mb=<m>``
where ``seconds`` and ``ratio`` are the DagBag figures (ls4's whole folder,
best round), ``processor_s`` the processor's time for all of ls4's collection
files and ``processor_ratio`` that over the baseline's, ``processor_file_s``
the slowest collection file (what the timeout applies to) and ``rss_mb`` the
largest parsing process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plugins"))

import psutil  # noqa: E402

from ls4_ops import registry  # noqa: E402
from ls4_ops.layout import Collection  # noqa: E402

PARSE = """
import time
from airflow.dag_processing.dagbag import DagBag
start, cpu = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder={folder!r}, safe_mode=True)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
assert not bag.import_errors, bag.import_errors
print(len(bag.dags), max(len(dag.tasks) for dag in bag.dags.values()), elapsed, cpu)
"""

# One file of the baseline: DAGs of empty operators in a chain, what Airflow itself costs to parse.
BASELINE_DAGS = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
for i in range({first}, {end}):
    with DAG(f"baseline_{{i}}", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        tasks = [EmptyOperator(task_id=f"t{{j}}") for j in range({tasks})]
        for upstream, downstream in zip(tasks, tasks[1:]):
            upstream >> downstream
    globals()[dag.dag_id] = dag
"""
# The DAG folder's other DAGs: discovery, the compiled index, maintenance, the upload router (the stack has a queue).
BUCKET_WIDE_DAGS = 4
COLLECTION_FILES = "ls4_collections"
SAMPLE_EVERY_S = 0.02


def scratch_collections(count: int) -> list[Collection]:
    types = ("frames", "index", "mosaic")
    return [Collection("nc" if i % 2 else "bw", f"county{i // 6}", "ams" if i % 3 else "usda", str(1940 + i % 50),
                       types[i % 3]) for i in range(count)]


def dagbag_parse(folder: str, env: dict, expected_dags: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of one DagBag parse of ``folder`` in a fresh process, and the most tasks a DAG has."""
    output = subprocess.run([sys.executable, "-c", PARSE.format(folder=folder)], env=env, check=True,
                            capture_output=True, text=True).stdout.split()
    dags, tasks, seconds, cpu = int(output[-4]), int(output[-3]), float(output[-2]), float(output[-1])
    assert dags == expected_dags, f"{folder}: {dags} DAGs parsed, expected {expected_dags}"
    return seconds, cpu, tasks


def write_baseline(folder: str, count: int, files: int, tasks: int) -> None:
    os.makedirs(folder)
    for file in range(files):
        with open(os.path.join(folder, f"baseline_{file}.py"), "w") as handle:
            handle.write(BASELINE_DAGS.format(first=count * file // files, end=count * (file + 1) // files,
                                              tasks=tasks))


def run_processor(folder: str, env: dict, database: str, expected_dags: int) -> dict:
    """One pass of Airflow's DAG processor over ``folder``: seconds per file, peak RSS, wall time."""
    home = os.path.dirname(database)
    env = dict(env, AIRFLOW_HOME=home, AIRFLOW__CORE__DAGS_FOLDER=folder, AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{database}")
    start = time.perf_counter()
    with open(os.path.join(home, "dag-processor.log"), "w") as log:
        processor = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "airflow"), "dag-processor",
                                      "--num-runs", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        manager, peaks = psutil.Process(processor.pid), {}
        while processor.poll() is None:
            try:
                processes = [manager, *manager.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for process in processes:
                try:
                    peaks[process.pid] = max(peaks.get(process.pid, 0), process.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(SAMPLE_EVERY_S)
    wall = time.perf_counter() - start
    assert processor.returncode == 0, f"dag-processor exited {processor.returncode}: see {log.name}"
    with sqlite3.connect(database) as db:
        files = dict(db.execute("SELECT relative_fileloc, max(last_parse_duration) FROM dag WHERE NOT is_stale "
                                "GROUP BY relative_fileloc"))
        dags = db.execute("SELECT count(*) FROM dag WHERE NOT is_stale").fetchone()[0]
        errors = db.execute("SELECT filename, stacktrace FROM import_error").fetchall()
    assert not errors, f"{folder}: import errors {errors}"
    # A file killed at the timeout leaves no DAG and no import error, only a line in the log.
    with open(log.name) as handle:
        timed_out = sorted({line.split("rel_path=PosixPath('")[1].split("'")[0] for line in handle
                            if "exceeding the timeout" in line})
    for file in timed_out:
        files[file] = float("inf")
    assert timed_out or dags == expected_dags, f"{folder}: {dags} DAGs of {expected_dags}; see {log.name}"
    return {"files": files, "wall": wall, "manager_mb": peaks.pop(processor.pid, 0) / 2**20,
            "child_mb": max(peaks.values(), default=0) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-processor", dest="processor", action="store_false",
                        help="only the DagBag measure (the DAG processor pass takes 1-3 minutes)")
    args = parser.parse_args()
    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(ROOT, "dags"))
    collection_files = sorted(name for name in os.listdir(folder) if name.startswith(COLLECTION_FILES))
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "registry.json")
        collections = scratch_collections(args.collections)
        registry.save(path, collections)
        assert len(registry.load(path)) == args.collections
        env = dict(os.environ, LS4_REGISTRY=path, AIRFLOW_HOME=os.path.join(scratch, "airflow"))
        all_dags = args.collections + BUCKET_WIDE_DAGS
        _, _, tasks_per_collection = dagbag_parse(folder, env, all_dags)
        baseline_folder = os.path.join(scratch, "baseline")
        write_baseline(baseline_folder, args.collections, len(collection_files), tasks_per_collection)
        # Before each task, Airflow parses its DAG file again with the DAG id in
        # the parsing context; the factory then builds that one DAG.
        task_env = dict(env, _AIRFLOW_PARSING_CONTEXT_DAG_ID=collections[0].dag_id)
        runs: dict[str, list[tuple[float, float]]] = {"ls4": [], "task": [], "baseline": []}
        for _ in range(args.rounds):
            runs["ls4"].append(dagbag_parse(folder, env, all_dags)[:2])
            runs["baseline"].append(dagbag_parse(baseline_folder, env, args.collections)[:2])
            runs["task"].append(dagbag_parse(folder, task_env, 1 + BUCKET_WIDE_DAGS)[:2])
        best = {name: (min(wall for wall, _ in times), min(cpu for _, cpu in times)) for name, times in runs.items()}
        ratio = best["ls4"][0] / best["baseline"][0]
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"| DAG folder, DagBag | DAGs | tasks each | parse s (best of {args.rounds}) | CPU s (best) |")
        print("|---|---|---|---:|---:|")
        print(f"| ls4 (`dags/`) | {args.collections} + {BUCKET_WIDE_DAGS} bucket-wide | {tasks_per_collection} | "
              f"{best['ls4'][0]:.2f} | {best['ls4'][1]:.2f} |")
        print(f"| ls4, parsed for one task (parsing context) | 1 + {BUCKET_WIDE_DAGS} bucket-wide | "
              f"{tasks_per_collection} | {best['task'][0]:.2f} | {best['task'][1]:.2f} |")
        print(f"| EmptyOperator baseline | {args.collections} | {tasks_per_collection} | {best['baseline'][0]:.2f} | "
              f"{best['baseline'][1]:.2f} |")
        print(f"DagBag ls4/baseline: wall {ratio:.2f}, CPU {best['ls4'][1] / best['baseline'][1]:.2f}; per round "
              + " ".join(f"{ls4[0] / base[0]:.2f}" for ls4, base in zip(runs["ls4"], runs["baseline"])))
        line = f"parse: collections={args.collections} seconds={best['ls4'][0]:.3f} ratio={ratio:.2f}"
        if args.processor:
            line += processor_measure(scratch, folder, baseline_folder, env, args.collections)
        print(f"load average at end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(line)


def processor_measure(scratch: str, folder: str, baseline_folder: str, env: dict, collections: int) -> str:
    """Both folders through the DAG processor; the table, and the bench line's part."""
    template = os.path.join(scratch, "migrated.db")
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "airflow"), "db", "migrate"], check=True,
                   capture_output=True, env=dict(env, AIRFLOW_HOME=os.path.dirname(template),
                                                 AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{template}"))
    results = {}
    for name, dags, expected in (("ls4", folder, collections + BUCKET_WIDE_DAGS),
                                 ("baseline", baseline_folder, collections)):
        os.makedirs(os.path.join(scratch, f"processor-{name}"))
        database = os.path.join(scratch, f"processor-{name}", "airflow.db")
        shutil.copy(template, database)
        results[name] = run_processor(dags, env, database, expected)
    ls4_files = {file: seconds for file, seconds in results["ls4"]["files"].items() if file.startswith(COLLECTION_FILES)}
    ls4_total, baseline_total = sum(ls4_files.values()), sum(results["baseline"]["files"].values())
    other = {file: seconds for file, seconds in results["ls4"]["files"].items() if file not in ls4_files}
    print("| DAG processor, one pass | files | parse + serialize s, all files | slowest file s | "
          "peak RSS MB, largest child | peak RSS MB, manager | pass s (with DB writes) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, files, result in (("ls4 collection files", ls4_files, results["ls4"]),
                                ("EmptyOperator baseline", results["baseline"]["files"], results["baseline"])):
        print(f"| {name} | {len(files)} | {sum(files.values()):.2f} | {max(files.values()):.2f} | "
              f"{result['child_mb']:.0f} | {result['manager_mb']:.0f} | {result['wall']:.0f} |")
    print("ls4 bucket-wide files: " + ", ".join(f"{file} {seconds:.2f} s" for file, seconds in sorted(other.items())))
    print(f"DAG processor ls4/baseline: {ls4_total / baseline_total:.2f} (collection files, summed)")
    return (f" processor_s={ls4_total:.2f} processor_ratio={ls4_total / baseline_total:.2f}"
            f" processor_file_s={max(ls4_files.values()):.2f} rss_mb={results['ls4']['child_mb']:.0f}")


if __name__ == "__main__":
    main()

"""Scratch folders of tasks: reclaimed from tasks that were killed."""

import os
import signal
import subprocess
import sys

from ls4_ops import scratch

# A task that is killed in the middle of its work: its folder holds a partial file.
KILLED_TASK = """
import os, signal, sys
from ls4_ops import scratch
with scratch.workspace("cog") as folder:
    with open(os.path.join(folder, "cog.tif"), "wb") as partial:
        partial.write(b"II*\\x00" + bytes(2**20))
    print(folder, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_folder_is_named_after_its_process_and_only_those_of_dead_processes_are_stale():
    assert scratch.owner("4242-cog-x1y2") == 4242
    assert scratch.owner("notes") is None and scratch.owner("4242") is None and scratch.owner("ab-cog-x") is None
    names = ["1-cog-a", "2-compress-b", "notes", "3-index-c"]
    assert scratch.stale(names, alive=lambda pid: pid == 2) == ["1-cog-a", "3-index-c"]


def test_the_folder_of_a_task_killed_with_sigkill_is_reclaimed_by_the_next_task(tmp_path, monkeypatch):
    monkeypatch.setenv("LS4_SCRATCH_DIR", str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", KILLED_TASK], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert killed.returncode == -signal.SIGKILL
    left = killed.stdout.strip()
    assert os.path.getsize(os.path.join(left, "cog.tif")) > 2**20  # what a killed task leaves
    (tmp_path / "notes").mkdir()  # not a task's: left alone
    with scratch.workspace("compress") as mine:
        assert not os.path.exists(left)
        assert os.path.basename(mine).startswith(f"{os.getpid()}-compress-")
        # The folders of live processes (this one) are kept.
        with scratch.workspace("cog") as other:
            assert os.path.isdir(mine) and os.path.isdir(other)
    assert sorted(os.listdir(tmp_path)) == ["notes"]

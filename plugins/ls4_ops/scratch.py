"""Local scratch space of tasks, reclaimed even from tasks that were killed.

A task's temporary folder goes when the task ends, but not when its process
is killed (SIGKILL, the OOM killer, a worker lost): a frame's folder holds a
copy of the upload, its intermediate and its COG, hundreds of MB. So every
task's folder lives under one root (``LS4_SCRATCH_DIR``, default
``$TMPDIR/ls4-scratch``) and is named after the process that made it; each
new folder first removes the folders of processes that no longer exist on
this host.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

DEFAULT_ROOT = os.path.join(tempfile.gettempdir(), "ls4-scratch")


def root() -> str:
    return os.environ.get("LS4_SCRATCH_DIR") or DEFAULT_ROOT


def owner(name: str) -> int | None:
    """The process id a scratch folder is named after (``{pid}-{purpose}-{random}``); None
    for anything else, which is left alone."""
    pid, _, rest = name.partition("-")
    return int(pid) if pid.isdigit() and rest else None


def stale(names: Iterable[str], alive: Callable[[int], bool]) -> list[str]:
    """The folders whose process is gone."""
    return sorted(name for name in names if (pid := owner(name)) is not None and not alive(pid))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def reclaim(directory: str | None = None) -> list[str]:
    """Remove the folders of processes that are gone; return their names."""
    directory = directory or root()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed = stale(names, process_alive)
    for name in removed:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if removed:
        log.info("reclaimed the scratch folders of %d tasks that were killed: %s", len(removed), ", ".join(removed))
    return removed


@contextmanager
def workspace(purpose: str) -> Iterator[str]:
    """A fresh folder of this process under the scratch root, removed afterwards; the
    folders that killed tasks left behind are removed first."""
    directory = root()
    os.makedirs(directory, exist_ok=True)
    reclaim(directory)
    with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-{purpose}-", dir=directory) as path:
        yield path

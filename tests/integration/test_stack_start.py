"""Starting the local stack where users clone it, and a start that fails.

Each test runs a stack of its own (ports 27xxx, a state folder under the
test's tmp_path), beside the session's test stack.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request

import pytest

from include import local_stack

# Below Linux's ephemeral range (32768-60999): a port there can be held at any moment by
# some outgoing connection's local end, and a server then cannot bind it.
PORTS = {"LS4_S3_ENDPOINT": "http://127.0.0.1:27000", "LS4_PG_PORT": "27433", "LS4_WMS_PORT": "27081",
         "LS4_AIRFLOW_PORT": "27080"}
MAPFILE = """MAP
  NAME "probe"
  EXTENT 0 0 1 1
  PROJECTION "init=epsg:3857" END
  WEB METADATA "wms_title" "probe" "wms_enable_request" "*" "wms_srs" "EPSG:3857" END END
END
"""


def stack(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([local_stack.STACK, *args], env=env, capture_output=True, text=True, timeout=300)


def port_open(port: str) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", int(port))) == 0


@pytest.fixture
def private(tmp_path):
    """A folder only its owner may enter, as a home directory under /root is, holding the
    state folder and the venv (a link to the project's): where a clone in it keeps them."""
    folder = tmp_path / "home"
    folder.mkdir(mode=0o700)
    os.symlink(os.environ["LS4_VENV"], folder / "venv")
    env = local_stack.environment({**PORTS, "LS4_STATE_DIR": str(folder / "state"), "LS4_VENV": str(folder / "venv")})
    yield env
    stack(env, "stop")
    # What the stack put outside the folder for the services' users (see stack.sh).
    for name in ("pg", "mapserver"):
        link = os.path.join(env["LS4_STATE_DIR"], name)
        if os.path.islink(link):
            shutil.rmtree(os.path.realpath(link), ignore_errors=True)


def test_a_stack_in_a_folder_only_its_owner_may_enter_serves_the_wms_and_preview_assets(private):
    started = stack(private, "start", "mapserver")
    assert started.returncode == 0, started.stderr
    with open(os.path.join(private["LS4_MAPFILE_DIR"], "probe.map"), "w") as handle:
        handle.write(MAPFILE)
    base = f"http://127.0.0.1:{PORTS['LS4_WMS_PORT']}"
    with urllib.request.urlopen(f"{base}/wms/?map=/mapfiles/probe.map&SERVICE=WMS&REQUEST=GetCapabilities"
                                "&VERSION=1.3.0", timeout=30) as answer:
        assert b"<Title>probe</Title>" in answer.read()  # the mapfile was read
    with urllib.request.urlopen(f"{base}/vendor/leaflet/leaflet.js", timeout=30) as answer:
        assert answer.status == 200 and len(answer.read()) > 10_000
    # lighttpd could open its log: its start is in it, where the stack's log folder says.
    with open(os.path.join(private["LS4_STATE_DIR"], "log", "mapserver.log")) as log:
        assert "server started" in log.read()


def test_a_start_that_fails_stops_the_services_it_started_and_only_those(private):
    assert stack(private, "start", "s3").returncode == 0
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", int(PORTS["LS4_WMS_PORT"])))
        squatter.listen()
        failed = stack(private, "start", "s3", "postgis", "mapserver")
    assert failed.returncode != 0
    assert f"127.0.0.1:{PORTS['LS4_WMS_PORT']} is already taken" in failed.stderr
    assert "stopping what it started: postgis\n" in failed.stderr
    assert not port_open(PORTS["LS4_PG_PORT"])
    assert stack(private, "status", "postgis").returncode == 3
    # The S3 emulator was running before that start: it still is.
    assert stack(private, "status", "s3").returncode == 0
    again = stack(private, "start", "postgis", "mapserver")
    assert again.returncode == 0, again.stderr

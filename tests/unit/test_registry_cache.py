"""The DAG factory's copy of the registry: when it is refreshed from PostGIS, and what stays
when PostGIS does not answer (a database blip must not drop every collection's DAG)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from ls4_ops import registry
from ls4_ops.layout import parse_key
from ls4_ops.settings import Settings

C = parse_key("nc/anderson/ams_1960/frames/georef/x.tif").collection
D = parse_key("bw/travis/usda_1951/index/georef/x.tif").collection
MAX_AGE = 30


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_postgis() -> dict[str, str]:
    return {"LS4_PG_HOST": "127.0.0.1", "LS4_PG_PORT": str(closed_port()), "LS4_PG_DB": "ls4",
            "LS4_PG_USER": "ls4", "LS4_PG_PASSWORD": "x"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(registry_path=str(tmp_path / "cache" / "registry.json"), registry_max_age_s=MAX_AGE)


def age(path: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_refresh_is_due_without_a_copy_once_it_is_old_or_when_it_claims_to_come_from_the_future():
    now = 1_000_000.0
    assert registry.refresh_due(None, now, MAX_AGE)
    assert not registry.refresh_due(now - MAX_AGE + 1, now, MAX_AGE)
    assert registry.refresh_due(now - MAX_AGE, now, MAX_AGE)
    assert registry.refresh_due(now + 3600, now, MAX_AGE)  # a clock set back: not fresh for an hour


def test_a_fresh_copy_is_read_without_asking_postgis(settings, monkeypatch):
    registry.save(settings.registry_path, [C])

    def no_network(environ):
        raise AssertionError("PostGIS asked at parse time although the copy is fresh")
    monkeypatch.setattr(registry, "_fetch_quickly", no_network)
    assert registry.current(settings) == {C.name: C}


def test_an_old_copy_is_replaced_by_what_postgis_has(settings, monkeypatch):
    registry.save(settings.registry_path, [C])
    age(settings.registry_path, MAX_AGE + 1)
    monkeypatch.setattr(registry, "_fetch_quickly", lambda environ: {D.name: D})
    assert registry.current(settings) == {D.name: D}
    assert registry.load(settings.registry_path) == {D.name: D}
    assert not registry.refresh_due(os.stat(settings.registry_path).st_mtime, time.time(), MAX_AGE)


def test_when_postgis_does_not_answer_the_last_known_collections_stay_and_the_next_try_waits(settings):
    registry.save(settings.registry_path, [C, D])
    age(settings.registry_path, MAX_AGE + 1)
    started = time.monotonic()
    assert registry.current(settings, environ=unreachable_postgis()) == {C.name: C, D.name: D}
    assert time.monotonic() - started < registry.REFRESH_CONNECT_TIMEOUT_S + 1
    # Tried just now: the next parses read the copy without paying for another try.
    assert not registry.refresh_due(os.stat(settings.registry_path).st_mtime, time.time(), MAX_AGE)


def test_postgis_without_a_registry_yet_or_not_described_keeps_the_copy(settings, monkeypatch):
    registry.save(settings.registry_path, [C])
    age(settings.registry_path, MAX_AGE + 1)
    monkeypatch.setattr(registry, "_fetch_quickly", lambda environ: None)
    assert registry.current(settings) == {C.name: C}
    monkeypatch.undo()
    age(settings.registry_path, MAX_AGE + 1)
    assert registry.current(settings, environ={}) == {C.name: C}  # no LS4_PG_*


def test_without_a_copy_or_postgis_there_is_no_collection_and_the_next_parse_tries_again(settings):
    assert registry.current(settings, environ=unreachable_postgis()) == {}
    assert not os.path.exists(settings.registry_path)

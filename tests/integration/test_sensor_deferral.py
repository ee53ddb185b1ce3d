"""The deferrable ``wait_for_georef`` sensor, against the test stack's real S3 endpoint.

The sensor is taken from a collection DAG made by the real factory. With
nothing under the collection's ``georef/`` it must defer to the amazon
provider's S3KeyTrigger; that trigger, run as the triggerer runs it (from its
serialized form), must stay silent while the prefix is empty and fire once a
georef upload lands in the S3 emulator.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from datetime import timedelta

import pytest
from airflow.providers.amazon.aws.triggers.s3 import S3KeyTrigger
from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import TriggerEvent

from ls4_ops import registry
from ls4_ops.layout import parse_key
from ls4_ops.operators.collection_dags import dag_file_module
from ls4_ops.settings import Settings
from tests.integration import pipeline

# A collection no other test uses; its upload is removed afterwards so that no
# later discovery registers it.
KEY = "bw/defertown/usgs_1999/frames/georef/19990101_1.tif"
COLLECTION = parse_key(KEY).collection
# The DAG's sensor polls every 60 s; a copy of its trigger polls faster so the
# test sees it fire after an upload within seconds.
FAST_POKE = 0.2


@pytest.fixture
def sensor(services, tmp_path, monkeypatch):
    path = str(tmp_path / "registry.json")
    registry.save(path, [COLLECTION])
    monkeypatch.setenv("LS4_REGISTRY", path)
    dag = getattr(pipeline.load_dags(dag_file_module(COLLECTION.dag_id)), COLLECTION.dag_id)
    client = pipeline.s3()
    assert client.list_objects_v2(Bucket=pipeline.bucket(), Prefix=COLLECTION.prefix("georef"))["KeyCount"] == 0
    yield dag.get_task("wait_for_georef")
    client.delete_object(Bucket=pipeline.bucket(), Key=KEY)


def rebuilt(trigger: S3KeyTrigger, **overrides) -> S3KeyTrigger:
    """The trigger as the triggerer re-creates it: from its serialized class path and arguments."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    hook_params = kwargs.pop("hook_params")
    return getattr(importlib.import_module(module), name)(**{**kwargs, **hook_params, **overrides})


async def first_event(trigger: S3KeyTrigger) -> TriggerEvent:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


async def endpoint_of(trigger: S3KeyTrigger) -> str:
    async with await trigger.hook.get_async_conn() as client:
        return client.meta.endpoint_url


def test_sensor_defers_until_a_georef_upload_arrives(sensor, tmp_path):
    assert sensor.deferrable
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=sensor.timeout)
    trigger = deferred.value.trigger
    assert isinstance(trigger, S3KeyTrigger)
    settings = Settings.from_env()
    assert (trigger.bucket_name, trigger.bucket_key, trigger.wildcard_match, trigger.aws_conn_id) == (
        settings.bucket, f"{COLLECTION.prefix('georef')}*", True, settings.s3_conn_id)

    async def scenario() -> TriggerEvent:
        as_deferred = rebuilt(trigger)
        # The triggerer's client talks to the configured endpoint (the S3 emulator), not to AWS.
        assert await endpoint_of(as_deferred) == os.environ["LS4_S3_ENDPOINT"]
        # Empty prefix: the first poll finds nothing, so no event before the next poll in 60 s.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(first_event(as_deferred), timeout=2)

        waiting = asyncio.ensure_future(first_event(rebuilt(trigger, poke_interval=FAST_POKE)))
        await asyncio.sleep(1.5)
        assert not waiting.done(), "the trigger fired with nothing under georef/"
        path = tmp_path / "frame.tif"
        path.write_bytes(b"II*\x00 not really a TIFF")
        await asyncio.to_thread(pipeline.upload, str(path), KEY)
        event = await asyncio.wait_for(waiting, timeout=15)
        # The trigger as deferred (60 s polls) sees the upload on its first poll.
        assert await asyncio.wait_for(first_event(rebuilt(trigger)), timeout=10) == event
        return event

    event = asyncio.run(scenario())
    assert event.payload == {"status": "success"}
    # Resumed in the task with that event, the sensor completes; a new run does not defer.
    sensor.execute_complete(context={}, event=event.payload)
    sensor.execute(context={})

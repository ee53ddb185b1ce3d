"""Where the bucket sends no events (``LS4_UPLOAD_QUEUE`` empty), the polling fallback:
``ls4_discovery`` lists the bucket every two minutes and starts the runs of the
collections whose uploads changed, with the result the events give.

Starts `airflow standalone` with that configuration for this module, and
switches the bucket's notification off meanwhile.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ls4_ops.layout import MAPFILE_PREFIX, parse_key
from tests.conftest import STACK
from tests.integration import pipeline
from tests.integration.test_scheduler import has_cog, idle, runs_of, upload_frames, wait_until

KEY = "nc/polltown/usda_1962/frames/georef/19620505_3-1.tif"


@pytest.fixture(scope="module")
def airflow_polling(services, airflow_db):
    client, bucket = pipeline.s3(), pipeline.bucket()
    events = client.get_bucket_notification_configuration(Bucket=bucket)
    events.pop("ResponseMetadata", None)
    # Upload events off; the mapfile sync keeps its own (it is not what is tested here).
    mapfiles_only = [queue for queue in events["QueueConfigurations"]
                     if queue["Filter"]["Key"]["FilterRules"][0]["Value"] == MAPFILE_PREFIX]
    client.put_bucket_notification_configuration(Bucket=bucket,
                                                 NotificationConfiguration={"QueueConfigurations": mapfiles_only})
    subprocess.run([STACK, "start", "airflow"], check=True, env=dict(os.environ, LS4_UPLOAD_QUEUE=""))
    yield
    subprocess.run([STACK, "stop", "airflow"], check=False)
    client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=events)


def test_without_events_discovery_finds_new_and_changed_uploads_and_starts_their_runs(airflow_polling, tmp_path):
    collection = parse_key(KEY).collection
    router_runs = runs_of("ls4_uploads")
    upload_frames(tmp_path, [KEY], origin=(660_000.0, 3_370_000.0))
    wait_until("COG of the first upload", lambda: has_cog(KEY))
    pipeline.wait_for_mapfile(collection, timeout=120)
    wait_until("collection idle", lambda: idle(collection.dag_id))
    before = len(runs_of(collection.dag_id))

    second = KEY.replace("3-1", "3-2")
    (tmp_path / "second").mkdir()
    upload_frames(tmp_path / "second", [second], origin=(661_000.0, 3_370_000.0))
    wait_until("COG of an upload into the known collection", lambda: has_cog(second))
    wait_until("collection idle", lambda: idle(collection.dag_id))
    new = runs_of(collection.dag_id)[before:]
    assert new and {run_type for _, _, run_type in new} == {"asset_triggered"}
    assert runs_of("ls4_uploads") == router_runs  # no router: no events

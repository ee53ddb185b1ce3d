"""`make run`, after the stack is up: load the sample collections and let Airflow process them.

Idempotent: frames already in the bucket are not uploaded again, and a
collection whose WMS already answers is only checked.
"""

from __future__ import annotations

import os
import sys
import urllib.request

from rasterio.warp import transform_bounds
from tenacity import Retrying, stop_after_delay, wait_fixed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from include.synthetic import make_frame  # noqa: E402
from ls4_ops.airflow_api import AirflowApi, AirflowUnreachable  # noqa: E402
from ls4_ops.layout import Collection, parse_key  # noqa: E402
from ls4_ops.mapfile import mapfile_url  # noqa: E402
from ls4_ops.preview import preview_url  # noqa: E402
from ls4_ops.s3env import S3Endpoint  # noqa: E402
from ls4_ops.settings import Settings  # noqa: E402

UTM = "EPSG:26914"
FRAME = (1200, 900)
ORIGIN = (620_000.0, 3_349_000.0)
SAMPLES = {
    # key -> (band, crs): three adjacent natural-colour frames in UTM 14N, three grayscale in Web Mercator
    **{f"nc/sample/tops_1975/frames/georef/19750312_4-{i + 1}.tif": ("nc", UTM, i) for i in range(3)},
    **{f"bw/sample/ams_1960/frames/georef/19600105_{i + 1}.tif": ("bw", "EPSG:3857", i) for i in range(3)},
}
TIMEOUT = 900
# Both sample collections lie side by side in this box (EPSG:3857).
SAMPLE_BBOX = transform_bounds(UTM, "EPSG:3857", ORIGIN[0], ORIGIN[1], ORIGIN[0] + 3 * FRAME[0], ORIGIN[1] + FRAME[1])


def upload_samples(client, bucket: str, folder: str) -> None:
    existing = {o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in p.get("Contents", [])}
    os.makedirs(folder, exist_ok=True)
    for key, (band, crs, i) in SAMPLES.items():
        if key in existing:
            continue
        x0 = ORIGIN[0] + i * FRAME[0]
        bounds = (x0, ORIGIN[1], x0 + FRAME[0], ORIGIN[1] + FRAME[1])
        if crs != UTM:
            bounds = transform_bounds(UTM, crs, *bounds)
        path = os.path.join(folder, os.path.basename(key))
        make_frame(path, band, *FRAME, crs=crs, bounds=bounds, collar=16)
        client.upload_file(path, bucket, key)
        scan = parse_key(key).scanned_candidates()[0]
        client.upload_file(path, bucket, scan)
        print(f"uploaded s3://{bucket}/{key}")


def wait_for(what: str, check, timeout: float = TIMEOUT, interval: float = 5) -> None:
    try:
        for attempt in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval), reraise=True):
            with attempt:
                if not check():
                    raise TimeoutError(what)
    except TimeoutError:
        raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}; "
                         f"see {os.environ['LS4_STATE_DIR']}/log/") from None
    except AirflowUnreachable as error:
        raise SystemExit(f"the Airflow API does not answer ({error}) while waiting for {what}; "
                         f"see {os.environ['LS4_STATE_DIR']}/log/airflow.log") from None


def wms_answers(collection: Collection, wms_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{mapfile_url(collection, wms_url)}&SERVICE=WMS&REQUEST=GetMap"
                                    f"&VERSION=1.3.0&LAYERS={collection.name}&STYLES=&CRS=EPSG:3857"
                                    f"&BBOX={','.join(map(str, SAMPLE_BBOX))}&WIDTH=256&HEIGHT=256"
                                    "&FORMAT=image/png", timeout=30) as response:
            return response.headers.get("Content-Type", "").startswith("image/png")
    except OSError:
        return False


def main() -> None:
    settings = Settings.from_env()
    client = S3Endpoint.from_env().boto3_client()
    upload_samples(client, settings.bucket, os.path.join(os.environ["LS4_STATE_DIR"], "sample"))
    collections = {parse_key(key).collection for key in SAMPLES}

    if all(wms_answers(c, settings.wms_url) for c in collections):
        print_urls(collections, settings)
        return
    # No trigger by hand: the scheduled ls4_discovery DAG finds the new
    # collections, and their DAGs run as soon as they are parsed.
    api = AirflowApi.from_env()
    wanted = {c.dag_id for c in collections}
    wait_for("the collection DAGs", lambda: all(api.has_dag(dag_id) for dag_id in wanted))
    for collection in sorted(collections):
        if wms_answers(collection, settings.wms_url):
            continue
        # A new DAG runs by itself; an existing one whose WMS does not answer
        # (a state dir from an older ls4) is run now rather than at the next interval.
        last = api.last_run(collection.dag_id)
        if last is None or last.state not in ("queued", "running"):
            api.trigger(collection.dag_id, conf={})
        wait_for(f"the WMS of {collection.name} (DAG {collection.dag_id})",
                 lambda: wms_answers(collection, settings.wms_url))
    print_urls(collections, settings)


def print_urls(collections: set[Collection], settings: Settings) -> None:
    print("\nWMS GetCapabilities:")
    for collection in sorted(collections):
        print(f"  {mapfile_url(collection, settings.wms_url)}&SERVICE=WMS&REQUEST=GetCapabilities")
    print("\nPreview pages (the imagery in a browser; click a frame for its attributes):")
    for collection in sorted(collections):
        print(f"  {preview_url(collection, settings.wms_url)}")
    print(f"\nAirflow UI: http://127.0.0.1:{os.environ['LS4_AIRFLOW_PORT']}/")
    print("Stop everything with `make stop` (the bucket, PostGIS and Airflow history are kept).")


if __name__ == "__main__":
    main()

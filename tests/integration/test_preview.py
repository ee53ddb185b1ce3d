"""GetFeatureInfo in text/html and the collection's preview page, on the real stack: a collection
processed by its DAG, its page opened in headless Chromium (Debian's, driven by playwright), the
imagery on screen compared with the source by pixels, a frame clicked."""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from rasterio.warp import transform_bounds
from sqlalchemy import text

from include import local_stack
from ls4_ops.layout import parse_key
from ls4_ops.mapfile import index_layer_name, mapfile_url
from ls4_ops.preview import preview_url
from ls4_ops.settings import Settings
from ls4_ops.tileindex import COLUMNS
from tests.integration import pipeline, wms

pytestmark = pytest.mark.usefixtures("airflow_db")

ROOT = "nc/previewville/tops_1977/frames/"
COLLECTION = parse_key(f"{ROOT}georef/x.tif").collection
UTM = pipeline.UTM
FRAME = (600, 500)
ORIGIN = (610_000.0, 3_345_000.0)
DATE = "19770415"
# Debian's chromium, with what keeps it off the network and its first-run work on this closed machine.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1024, "height": 768}


def frame_bounds(i: int):
    return pipeline.row_bounds(ORIGIN, FRAME, i)


def georef_key(i: int) -> str:
    return f"{ROOT}georef/{DATE}_2-{i + 1}.tif"


@pytest.fixture(scope="module")
def sources(services, tmp_path_factory):
    """Two frames side by side; only the first has its original scan (so a dl_orig link)."""
    made = pipeline.upload_row(tmp_path_factory.mktemp("preview"), [georef_key(i) for i in range(2)], ORIGIN, FRAME)
    pipeline.upload(made[georef_key(0)], f"{ROOT}scanned/{DATE}_2-1.tif")
    run = pipeline.process(COLLECTION)
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["preview"] == "success"
    return made


def page_url() -> str:
    return preview_url(COLLECTION, os.environ["LS4_WMS_URL"])


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_for_status(url: str, status: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while http_status(url) != status:
        assert time.monotonic() < deadline, f"{url} did not answer {status} within {timeout} s"
        time.sleep(0.5)


def public_link(key: str) -> str:
    return Settings.from_env().public_link(key)


class FrameTables(HTMLParser):
    """The frames of a text/html GetFeatureInfo answer: for each, {column: (text, [link hrefs])}."""

    def __init__(self, body: str):
        super().__init__()
        self.frames: list[dict] = []
        self.cell = self.column = None
        self.feed(body)

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("class", "ls4-frame") in attrs:
            self.frames.append({})
        elif tag in ("th", "td"):
            self.cell = ("", [])
        elif tag == "a" and self.cell is not None:
            self.cell[1].append(dict(attrs)["href"])

    def handle_data(self, data):
        if self.cell is not None:
            self.cell = (self.cell[0] + data, self.cell[1])

    def handle_endtag(self, tag):
        if tag == "th":
            self.column = self.cell[0]
        elif tag == "td":
            self.frames[-1][self.column] = self.cell
        self.cell = None if tag in ("th", "td") else self.cell


def feature_info_html(i: int) -> tuple[str, list[dict]]:
    """GetFeatureInfo text/html at the middle of frame ``i``: the raw answer and its frames."""
    layer = index_layer_name(COLLECTION)
    bbox = transform_bounds(UTM, "EPSG:3857", *frame_bounds(i))
    content_type, body = wms.wms_get(
        mapfile_url(COLLECTION, os.environ["LS4_WMS_URL"]), REQUEST="GetFeatureInfo", LAYERS=layer,
        QUERY_LAYERS=layer, STYLES="", CRS="EPSG:3857", BBOX=",".join(map(str, bbox)), WIDTH=256, HEIGHT=256,
        FORMAT="image/png", INFO_FORMAT="text/html", I=128, J=128, FEATURE_COUNT=5)
    assert content_type.startswith("text/html"), body[:300]
    return body.decode(), FrameTables(body.decode()).frames


def test_getfeatureinfo_html_shows_every_attribute_and_the_download_links(sources):
    _, frames = feature_info_html(0)
    assert len(frames) == 1
    frame = frames[0]
    assert list(frame) == COLUMNS
    assert frame["date"] == (DATE, []) and frame["frame_num"] == ("1", [])
    for column, key in (("dl_orig", f"{ROOT}scanned/{DATE}_2-1.tif"), ("dl_georef", f"{ROOT}cog/{DATE}_2-1.tif"),
                        ("dl_index", COLLECTION.tile_index_zip_key)):
        assert frame[column] == (public_link(key), [public_link(key)]), column
    # No scan, no link.
    assert feature_info_html(1)[1][0]["dl_orig"] == ("", [])


def test_getfeatureinfo_html_escapes_values_and_links_only_web_addresses(sources):
    odd = {"roll": '<b>"2"</b> & <script>alert(1)</script>', "dl_orig": "javascript:alert(1)"}
    table = COLLECTION.table
    with local_stack.postgis_engine().begin() as connection:
        before = connection.execute(text(f"select roll, dl_orig from {table} where frame_num = '2'")).one()
        connection.execute(text(f"update {table} set roll = :roll, dl_orig = :dl_orig where frame_num = '2'"), odd)
    try:
        body, frames = feature_info_html(1)
    finally:
        with local_stack.postgis_engine().begin() as connection:
            connection.execute(text(f"update {table} set roll = :roll, dl_orig = :dl_orig where frame_num = '2'"),
                               dict(before._mapping))
    assert "<script>" not in body and "<b>" not in body
    assert frames[0]["roll"] == (odd["roll"], [])
    assert frames[0]["dl_orig"] == (odd["dl_orig"], [])


def test_the_sync_serves_preview_pages_and_removes_them_with_their_object(services):
    key, url = "mapfiles/zz_preview_sync.html", page_url().replace(COLLECTION.name, "zz_preview_sync")
    pipeline.s3().put_object(Bucket=pipeline.bucket(), Key=key, Body=b"<p>a page</p>", ContentType="text/html")
    wait_for_status(url, 200)
    pipeline.s3().delete_object(Bucket=pipeline.bucket(), Key=key)
    wait_for_status(url, 404)
    # Never a mapfile or a template, nor a name MapServer's pattern would refuse.
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    for path in ("/preview/zz.map", "/preview/templates/ls4_index.html", "/preview/Zz.html", "/preview/"):
        assert http_status(origin + path) == 403, path


def test_preview_page_shows_the_imagery_and_a_click_shows_the_frame(sources, tmp_path):
    from playwright.sync_api import sync_playwright

    wait_for_status(page_url(), 200)
    off_host, errors = [], []

    def only_this_host(route):
        # The base layer's tiles (the one thing on another host) fail, as on a machine offline.
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            off_host.append(route.request.url)
            route.abort()

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT,
            accept_downloads=True)
        page = browser.new_page()
        page.route("**/*", only_this_host)
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(page_url())
        page.wait_for_function("""() => {
            const tiles = [...document.querySelectorAll(".ls4-wms img")];
            return tiles.length > 0 && tiles.every(tile => tile.classList.contains("leaflet-tile-loaded"));
        }""", timeout=60_000)
        box, bbox = screen_box(page, 1)
        screenshot = tmp_path / "preview.png"
        page.screenshot(path=str(screenshot))
        x, y, side = box
        shown = wms.png_pixels(screenshot.read_bytes())[:3, y:y + side, x:x + side]
        expected, valid = wms.source_in_box(sources[georef_key(1)], bbox, size=side)
        difference = wms.mean_abs_difference(shown, expected, valid)
        background = float(abs(shown.astype("float32") - 221).mean())  # Leaflet's grey, where nothing loaded
        assert difference < 8 and background > 3 * difference, (difference, background, str(screenshot))

        page.mouse.click(*frame_middle(page, 0))
        popup = page.locator(".leaflet-popup-content .ls4-frame")
        popup.wait_for(timeout=30_000)
        assert popup.locator(".ls4-date").inner_text() == DATE
        link = popup.get_by_role("link", name=public_link(f"{ROOT}cog/{DATE}_2-1.tif"))
        with page.expect_download() as download:
            link.click()
        assert download.value.url == public_link(f"{ROOT}cog/{DATE}_2-1.tif")
        browser.close()
    assert errors == []
    assert off_host and all(urlsplit(url).hostname == "tile.openstreetmap.org" for url in off_host), off_host


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    """The page pixel of EPSG:3857 point (x, y) on the preview map."""
    return tuple(page.evaluate("""([x, y]) => {
        const point = map.latLngToContainerPoint(L.CRS.EPSG3857.unproject(L.point(x, y)));
        const origin = map.getContainer().getBoundingClientRect();
        return [origin.left + point.x, origin.top + point.y];
    }""", [x, y]))


def frame_middle(page, i: int) -> tuple[float, float]:
    minx, miny, maxx, maxy = transform_bounds(UTM, "EPSG:3857", *frame_bounds(i))
    return to_screen(page, (minx + maxx) / 2, (miny + maxy) / 2)


def screen_box(page, i: int):
    """A square of whole page pixels inside frame ``i``, clear of its collar and footprint outline:
    ((left, top, side), its bbox in EPSG:3857)."""
    minx, miny, maxx, maxy = transform_bounds(UTM, "EPSG:3857", *frame_bounds(i))
    left, top = to_screen(page, minx + (maxx - minx) * 0.2, maxy - (maxy - miny) * 0.2)
    right, bottom = to_screen(page, maxx - (maxx - minx) * 0.2, miny + (maxy - miny) * 0.2)
    x, y = int(left) + 1, int(top) + 1
    side = int(min(right - x, bottom - y))
    assert side >= 40, (left, top, right, bottom)
    corners = page.evaluate("""([x, y, side]) => {
        const origin = map.getContainer().getBoundingClientRect();
        const at = (px, py) => L.CRS.EPSG3857.project(map.containerPointToLatLng([px - origin.left, py - origin.top]));
        const low = at(x, y + side), high = at(x + side, y);
        return [low.x, low.y, high.x, high.y];
    }""", [x, y, side])
    return (x, y, side), tuple(corners)

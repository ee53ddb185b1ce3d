"""The preview page as rendered, the GetFeatureInfo text/html templates, and the task that publishes the page."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser

from ls4_ops import mapfile
from ls4_ops.layout import Collection, parse_key
from ls4_ops.preview import preview_url, render
from ls4_ops.settings import Settings
from ls4_ops.tileindex import COLUMNS, LINK_COLUMNS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION = parse_key("nc/travis/ams_1960/frames/georef/x.tif").collection
WMS = "http://maps.example.org:8081/wms/"
EXTENT = [-10_880_000.5, 3_535_000.25, -10_870_000.0, 3_540_000.0]


class Page(HTMLParser):
    """What a browser would load and run from a page."""

    def __init__(self, text: str):
        super().__init__()
        self.loads: list[str] = []
        self.scripts: list[str] = []
        self.texts: list[str] = []
        self.in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.loads += [attrs[name] for name in ("src", "href") if name in attrs and tag in ("script", "link")]
        self.in_script = tag == "script"

    def handle_endtag(self, tag):
        self.in_script = False

    def handle_data(self, data):
        (self.scripts if self.in_script else self.texts).append(data)

    def config(self) -> dict:
        """The page's settings object, as the browser's JavaScript sees it."""
        literal = re.search(r"const ls4 = (.*);\n", "".join(self.scripts)).group(1)
        return json.loads(literal)


def test_the_page_loads_leaflet_from_its_own_host_and_asks_the_wms_on_its_own_origin():
    text = render(COLLECTION, WMS, EXTENT)
    page = Page(text)
    assert page.loads == ["/vendor/leaflet/leaflet.css", "/vendor/leaflet/leaflet.js"]
    assert not re.search(r"unpkg|jsdelivr|cdnjs|googleapis|cdn\.", text, re.IGNORECASE)
    config = page.config()
    assert config["wms"] == f"/wms/?map=/{COLLECTION.mapfile_key}"
    assert (config["imagery"], config["footprints"]) == (COLLECTION.name, mapfile.index_layer_name(COLLECTION))
    assert config["extent"] == EXTENT
    # The one address elsewhere: the base layer's tiles, which the page can do without.
    assert [url for url in re.findall(r"https?://[^\s\"'<\\]+", text) if not url.startswith(WMS)] == [
        config["baseTiles"], "https://www.openstreetmap.org/copyright"]
    shown = " ".join("".join(page.texts).split())
    assert COLLECTION.title in shown
    assert f"{WMS}?map=/{COLLECTION.mapfile_key}&SERVICE=WMS&REQUEST=GetCapabilities" in shown
    assert render(COLLECTION, WMS, EXTENT, "https://maps.example.org/static/leaflet/").count(
        '"https://maps.example.org/static/leaflet/leaflet.js"') == 1


def test_everything_put_in_the_page_is_escaped():
    # Collection names are validated identifiers; the page does not rely on it.
    odd = Collection("nc", "a</script><script>alert(1)</script>", "ams&co", "1960", 'frames"x')
    wms = "http://maps.example.org/wms/?a=1&b=</script>"
    text = render(odd, wms, EXTENT, 'x"><script>alert(2)</script>')
    assert text.lower().count("<script") == 2  # Leaflet's and the page's, none injected
    page = Page(text)
    assert page.config()["imagery"] == odd.name  # intact once parsed by the browser
    assert odd.title in "".join(page.texts)
    assert page.loads[0] == 'x"><script>alert(2)</script>/leaflet.css'


def test_the_page_sits_beside_the_mapfile_and_is_served_on_the_wms_host():
    assert COLLECTION.preview_key == "mapfiles/travis_ams_1960_frames.html"
    assert os.path.dirname(COLLECTION.preview_key) == os.path.dirname(COLLECTION.mapfile_key)
    assert preview_url(COLLECTION, WMS) == "http://maps.example.org:8081/preview/travis_ams_1960_frames.html"


def test_the_index_layer_answers_getfeatureinfo_through_the_html_templates():
    built = mapfile.build(COLLECTION, EXTENT, wms_url=WMS, pg_service="ls4", generation=1)
    index = next(layer for layer in built["layers"] if layer["name"] == mapfile.index_layer_name(COLLECTION))
    assert built["web"]["metadata"]["wms_feature_info_mime_type"].split() == [
        "text/plain", "text/html", "application/vnd.ogc.gml"]
    templates = {part: os.path.join(ROOT, "include", "mapserver", os.path.basename(index[part]))
                 for part in ("header", "template", "footer")}
    assert all(index[part] == f"templates/{os.path.basename(path)}" for part, path in templates.items())
    for path in templates.values():
        with open(path) as handle:
            assert "mapserver template" in handle.readline().lower(), path  # or MapServer refuses it
    with open(templates["template"]) as handle:
        frame = handle.read()
    for column in COLUMNS:
        assert f'<th>{column}</th><td' in frame, column
        assert f'[item name="{column}"]' in frame, column  # HTML-escaped, MapServer's default
    # A link's markup is printed unescaped, so never with the value in it, and only for web addresses.
    unescaped = re.findall(r'\[item name="(\w+)"([^\]]*)escape="none"\]', frame)
    assert {name for name, _ in unescaped} == set(LINK_COLUMNS)
    assert all("$value" not in arguments and 'pattern="^https?://"' in arguments for _, arguments in unescaped)


def test_the_preview_is_published_beside_wms_served_after_the_mapfile():
    from ls4_ops.operators.collection_dags import collection_dag

    dag = collection_dag(COLLECTION, Settings(wms_url=WMS))
    assert dag.get_task("preview").upstream_task_ids == {"mapfile"}
    assert dag.get_task("preview").downstream_task_ids == set()
    assert preview_url(COLLECTION, WMS) in dag.doc_md

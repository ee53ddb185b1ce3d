"""The preview page of a collection: its WMS in Leaflet over a base map, with its
footprints and a click for a frame's attributes.

A self-contained page (no CDN): Leaflet comes from the MapServer host, which
serves the page itself at ``/preview/{collection}.html``, so the page asks the
WMS on its own origin and GetFeatureInfo needs no CORS.
"""

from __future__ import annotations

import html
import json
from urllib.parse import urlsplit

from ls4_ops.layout import Collection
from ls4_ops.mapfile import index_layer_name, mapfile_url

# Where the MapServer host serves the Leaflet that include/stack/install.sh vendors.
LEAFLET_URL = "/vendor/leaflet"
# Users are online: OpenStreetMap's tiles under the imagery. The page works without them.
BASE_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
BASE_ATTRIBUTION = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'


def preview_url(collection: Collection, wms_url: str) -> str:
    """Where users open the page: on the WMS host, under /preview/."""
    parts = urlsplit(wms_url)
    return f"{parts.scheme}://{parts.netloc}/preview/{collection.name}.html"


def render(collection: Collection, wms_url: str, extent: list[float], leaflet_url: str = LEAFLET_URL) -> str:
    """The page of ``collection`` (``extent`` in EPSG:3857) whose WMS is at ``wms_url``."""
    capabilities = f"{mapfile_url(collection, wms_url)}&SERVICE=WMS&REQUEST=GetCapabilities"
    config = {
        # Same origin as the page, whatever host name users reach it by.
        "wms": mapfile_url(collection, urlsplit(wms_url).path),
        "imagery": collection.name,
        "footprints": index_layer_name(collection),
        "extent": list(extent),
        "baseTiles": BASE_TILES,
        "baseAttribution": BASE_ATTRIBUTION,
    }
    title, leaflet = html.escape(collection.title), html.escape(leaflet_url.rstrip("/"))
    return PAGE.format(title=title, name=html.escape(collection.name), leaflet=leaflet,
                       capabilities=html.escape(capabilities), config=script_json(config))


def script_json(value) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – ls4 preview</title>
<link rel="stylesheet" href="{leaflet}/leaflet.css">
<style>
html, body {{ height: 100%; margin: 0; font: 14px sans-serif; }}
body {{ display: flex; flex-direction: column; }}
header {{ padding: 0.5em 1em; }}
header h1 {{ font-size: 1.3em; margin: 0 0 0.3em; }}
header p {{ margin: 0.2em 0; }}
header code {{ user-select: all; word-break: break-all; }}
#map {{ flex: 1; }}
.ls4-info {{ max-height: 40vh; overflow: auto; }}
.ls4-frame {{ border-collapse: collapse; margin-bottom: 0.8em; }}
.ls4-frame th {{ text-align: left; vertical-align: top; padding-right: 0.6em; }}
.ls4-frame td {{ word-break: break-all; }}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p>A preview of the aerial imagery of {title} ({name}) from its WMS, with the frames' footprints
over OpenStreetMap. Click a frame for its date, roll, frame number and download links.</p>
<p>In QGIS or another GIS, add the WMS: <code>{capabilities}</code></p>
</header>
<div id="map"></div>
<script src="{leaflet}/leaflet.js"></script>
<script>
const ls4 = {config};
const map = L.map("map");
const base = L.tileLayer(ls4.baseTiles, {{maxZoom: 19, attribution: ls4.baseAttribution}}).addTo(map);
const wms = (layers) => L.tileLayer.wms(ls4.wms, {{
  layers, format: "image/png", transparent: true, version: "1.3.0", maxZoom: 22, className: "ls4-wms"}});
const imagery = wms(ls4.imagery).addTo(map);
const footprints = wms(ls4.footprints).addTo(map);
L.control.layers({{OpenStreetMap: base}}, {{Imagery: imagery, Footprints: footprints}}).addTo(map);
const [minx, miny, maxx, maxy] = ls4.extent;
map.fitBounds(L.latLngBounds(L.CRS.EPSG3857.unproject(L.point(minx, miny)),
                             L.CRS.EPSG3857.unproject(L.point(maxx, maxy))));

// The frames under a click, as the WMS describes them in text/html.
map.on("click", async (event) => {{
  const size = map.getSize(), bounds = map.getBounds(), at = event.containerPoint.round();
  const sw = L.CRS.EPSG3857.project(bounds.getSouthWest()), ne = L.CRS.EPSG3857.project(bounds.getNorthEast());
  const query = new URLSearchParams({{
    SERVICE: "WMS", VERSION: "1.3.0", REQUEST: "GetFeatureInfo", LAYERS: ls4.footprints,
    QUERY_LAYERS: ls4.footprints, STYLES: "", CRS: "EPSG:3857", BBOX: [sw.x, sw.y, ne.x, ne.y].join(","),
    WIDTH: size.x, HEIGHT: size.y, FORMAT: "image/png", INFO_FORMAT: "text/html", I: at.x, J: at.y,
    FEATURE_COUNT: 10}});
  const answer = await fetch(`${{ls4.wms}}&${{query}}`);
  if (!answer.ok || !(answer.headers.get("Content-Type") || "").startsWith("text/html")) return;
  const frames = new DOMParser().parseFromString(await answer.text(), "text/html").querySelectorAll(".ls4-frame");
  if (!frames.length) return;
  const info = L.DomUtil.create("div", "ls4-info");
  info.append(...frames);
  L.popup({{maxWidth: 480}}).setLatLng(event.latlng).setContent(info).openOn(map);
}});
</script>
</body>
</html>
"""

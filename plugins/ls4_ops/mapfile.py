"""The collection's mapfile, built with mappyfile and validated for MapServer 8.

Secret-free by construction: COGs are opened by their public URLs, and the
index is read through a PostgreSQL service name whose password lives on the
MapServer host.
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass

from ls4_ops.layout import Collection, validate_identifier
from ls4_ops.tileindex import COLUMNS, DRAW_ORDER, GEOMETRY, INDEX_CRS, INDEX_SRID, KEY_COLUMN

MAPSERVER_VERSION = 8.0
# What clients commonly ask for; MapServer reprojects on the fly.
WMS_SRS = "EPSG:3857 EPSG:900913 EPSG:4326 EPSG:4269 EPSG:3081 EPSG:3083 EPSG:26914"
# s3fs shows objects with these attributes to the MapServer host: a regular file, rw-r--r--.
FILE_MODE = str(stat.S_IFREG | 0o644)


# GetFeatureInfo in text/html (what QGIS shows): the header, per-frame and footer
# templates of include/mapserver/, which the MapServer host keeps in this folder
# beside the mapfiles (MapServer reads a TEMPLATE path relative to the mapfile).
HTML_TEMPLATES = {"header": "templates/ls4_index_header.html", "template": "templates/ls4_index.html",
                  "footer": "templates/ls4_index_footer.html"}
FEATURE_INFO_FORMATS = "text/plain text/html application/vnd.ogc.gml"

# Bumped whenever ls4 changes what its mapfiles say: a run republishes a mapfile
# of another format (S3 metadata), even when its index did not change.
FORMAT = "2"
FORMAT_METADATA = "ls4-mapfile-format"

# MapServer's own (and default) pixel density for scales; set in the mapfile so
# the overview switch does not move if a default changes.
RESOLUTION_DPI = 72


class MapfileError(ValueError):
    pass


@dataclass(frozen=True)
class Overview:
    path: str  # what MapServer opens
    resolution: float  # metres per pixel


def index_layer_name(collection: Collection) -> str:
    return f"{collection.name}_index"


def map_name(collection: Collection) -> str:
    # Must differ from every layer name, or clients see the layers twice.
    return f"ls4_{collection.name}"


def mapfile_url(collection: Collection, wms_url: str) -> str:
    """The WMS endpoint of a collection, as users put it in their GIS."""
    return f"{wms_url}?map=/{collection.mapfile_key}"


def raster_layer_names(collection: Collection) -> tuple[str, str]:
    """The frames' layer and the overview's: both in the group ``collection.name``, which
    is the imagery layer clients ask for."""
    return f"{collection.name}_frames", f"{collection.name}_overview"


def switch_scale(overview_resolution: float) -> float:
    """The scale denominator at which a screen pixel is as large as an overview pixel
    (MapServer's 72 dpi): beyond it the overview is drawn instead of the frames."""
    return overview_resolution / (0.0254 / RESOLUTION_DPI)


def build(collection: Collection, extent: list[float], *, wms_url: str, pg_service: str, generation: int,
          overview: Overview | None = None) -> dict:
    """The mapfile of a collection whose tile index is at ``generation``.

    ``overview``: the collection overview, drawn instead of the frames when
    zoomed out (without it the frames are drawn at every scale).
    """
    index_layer = index_layer_name(collection)
    frames_layer, overview_layer = raster_layer_names(collection)
    srs_metadata = {"wms_srs": WMS_SRS}
    group = {"wms_group_title": collection.title, **srs_metadata}
    frames = {
        "__type__": "layer",
        "name": frames_layer,
        "group": collection.name,
        "type": "RASTER",
        "status": "ON",
        "tileindex": index_layer,
        "tileitem": "location",
        "tilesrs": "src_srs",
        "projection": [f"init={INDEX_CRS.lower()}"],
        "processing": ["RESAMPLE=AVERAGE"],
        "metadata": {"wms_title": f"{collection.title} frames", **group},
    }
    layers = [frames]
    if overview:
        frames["maxscaledenom"] = switch_scale(overview.resolution)
        layers.append({
            "__type__": "layer",
            "name": overview_layer,
            "group": collection.name,
            "type": "RASTER",
            "status": "ON",
            "data": overview.path,
            "projection": [f"init={INDEX_CRS.lower()}"],
            "processing": ["RESAMPLE=AVERAGE"],
            "minscaledenom": switch_scale(overview.resolution),
            "metadata": {"wms_title": f"{collection.title} overview", **group},
        })
    return {
        "__type__": "map",
        "name": map_name(collection),
        "status": "ON",
        "extent": list(extent),
        "size": [1024, 1024],
        "maxsize": 4096,
        "resolution": RESOLUTION_DPI,
        "defresolution": RESOLUTION_DPI,
        "units": "meters",
        "imagecolor": [255, 255, 255],
        "projection": [f"init={INDEX_CRS.lower()}"],
        "config": {
            # One missing COG must not blank the whole layer.
            "ON_MISSING_DATA": "IGNORE",
            # COGs are opened by their versioned public URLs (see tileindex.location):
            # GDAL may cache what it read, and no directory listing is needed.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        },
        "outputformats": [{
            "__type__": "outputformat", "name": "png", "driver": "AGG/PNG", "mimetype": "image/png",
            "imagemode": "RGBA", "extension": "png", "transparent": "ON",
        }],
        "web": {
            "__type__": "web",
            "metadata": {
                "wms_title": collection.title,
                "wms_abstract": f"Aerial imagery {collection.title} ({collection.name}), "
                                "published by ls4",
                # Tells a run that MapServer serves the mapfile it published.
                "wms_keywordlist": f"ls4,{generation_keyword(generation)}",
                "wms_onlineresource": f"{mapfile_url(collection, wms_url)}&",
                "wms_enable_request": "*",
                "wms_feature_info_mime_type": FEATURE_INFO_FORMATS,
                **srs_metadata,
            },
        },
        "layers": [
            {
                "__type__": "layer",
                "name": index_layer,
                "type": "POLYGON",
                "status": "ON",
                "connectiontype": "POSTGIS",
                "connection": f"service={pg_service}",
                # Ordered: as a tile index it decides which frame is drawn over which.
                "data": f"{GEOMETRY} from (select {KEY_COLUMN}, {', '.join(COLUMNS)}, {GEOMETRY} "
                        f"from {validate_identifier(collection.table)} order by {DRAW_ORDER}) as frames "
                        f"using unique {KEY_COLUMN} using srid={INDEX_SRID}",
                "projection": [f"init={INDEX_CRS.lower()}"],
                **HTML_TEMPLATES,  # a template also makes the layer queryable
                "tolerance": 0,
                "metadata": {
                    "wms_title": f"{collection.title} footprints",
                    "wms_include_items": ",".join(COLUMNS),
                    "gml_include_items": ",".join(COLUMNS),
                    "gml_featureid": KEY_COLUMN,
                    **srs_metadata,
                },
                "classes": [{
                    "__type__": "class",
                    "name": "footprint",
                    "styles": [{"__type__": "style", "outlinecolor": [255, 0, 0], "width": 1}],
                }],
            },
            *layers,
        ],
    }


def generation_keyword(generation: int) -> str:
    return f"index generation {generation}"


def shows_generation(capabilities: bytes, generation: int) -> bool:
    """Whether WMS capabilities come from the mapfile of index ``generation``."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(capabilities)
    return generation_keyword(generation) in {element.text for element in root.iter()
                                              if element.tag.rsplit("}", 1)[-1] == "Keyword"}


def render(mapfile: dict) -> str:
    """Mapfile text, refused if MapServer 8.0 would reject it."""
    import mappyfile  # imported here: DAG files use this module and must parse fast

    errors = _validation_errors(mapfile)
    if errors:
        raise MapfileError("; ".join(errors))
    return mappyfile.dumps(mapfile, indent=2)


def problems(text: str) -> list[str]:
    """Why MapServer 8.0 would reject mapfile ``text`` (empty when it would not)."""
    import mappyfile

    try:
        return _validation_errors(mappyfile.loads(text))
    except Exception as error:  # mappyfile raises lark's various parse errors
        return [f"it does not parse: {str(error).splitlines()[0] if str(error) else type(error).__name__}"]


def _validation_errors(mapfile: dict) -> list[str]:
    import mappyfile

    return [f"{e.get('error')} at {e.get('path', '')}" for e in mappyfile.validate(mapfile, version=MAPSERVER_VERSION)]


def s3fs_metadata(uid: str, gid: str, mtime: float | None = None) -> dict[str, str]:
    """Object metadata s3fs turns into file ownership on the MapServer host."""
    return {"uid": uid, "gid": gid, "mode": FILE_MODE,
            "mtime": str(int(mtime if mtime is not None else time.time()))}

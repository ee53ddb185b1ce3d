"""The collection's mapfile, built with mappyfile and validated for MapServer 8.

Secret-free by construction: rasters are opened through ``/vsis3/`` with the
S3 endpoint and keys from MapServer's own config file, and the index is read
through a PostgreSQL service name whose password lives on the MapServer host.
"""

from __future__ import annotations

import stat
import time

from ls4_ops.layout import Collection, validate_identifier
from ls4_ops.tileindex import COLUMNS, GEOMETRY, INDEX_CRS, INDEX_SRID, KEY_COLUMN

MAPSERVER_VERSION = 8.0
# What clients commonly ask for; MapServer reprojects on the fly.
WMS_SRS = "EPSG:3857 EPSG:900913 EPSG:4326 EPSG:4269 EPSG:3081 EPSG:3083 EPSG:26914"
# s3fs shows objects with these attributes to the MapServer host: a regular file, rw-r--r--.
FILE_MODE = str(stat.S_IFREG | 0o644)


class MapfileError(ValueError):
    pass


def index_layer_name(collection: Collection) -> str:
    return f"{collection.name}_index"


def map_name(collection: Collection) -> str:
    # Must differ from every layer name, or clients see the layers twice.
    return f"ls4_{collection.name}"


def mapfile_url(collection: Collection, wms_url: str) -> str:
    """The WMS endpoint of a collection, as users put it in their GIS."""
    return f"{wms_url}?map=/{collection.mapfile_key}"


def build(collection: Collection, extent: list[float], *, wms_url: str, pg_service: str) -> dict:
    index_layer = index_layer_name(collection)
    srs_metadata = {"wms_srs": WMS_SRS}
    return {
        "__type__": "map",
        "name": map_name(collection),
        "status": "ON",
        "extent": list(extent),
        "size": [1024, 1024],
        "maxsize": 4096,
        "units": "meters",
        "imagecolor": [255, 255, 255],
        "projection": [f"init={INDEX_CRS.lower()}"],
        "config": {
            # One missing COG must not blank the whole layer.
            "ON_MISSING_DATA": "IGNORE",
            # MapServer's FastCGI processes live long: without this, GDAL keeps
            # serving a replaced COG (or "not found") from its /vsis3/ cache.
            "CPL_VSIL_CURL_NON_CACHED": "/vsis3/",
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
                "wms_onlineresource": f"{mapfile_url(collection, wms_url)}&",
                "wms_enable_request": "*",
                "wms_feature_info_mime_type": "text/plain application/vnd.ogc.gml",
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
                "data": f"{GEOMETRY} from {validate_identifier(collection.table)} using unique {KEY_COLUMN} "
                        f"using srid={INDEX_SRID}",
                "projection": [f"init={INDEX_CRS.lower()}"],
                "template": "query",  # any template makes the layer queryable
                "tolerance": 0,
                "metadata": {
                    "wms_title": f"{collection.title} footprints",
                    # The users' attributes, not the index's bookkeeping (COG key, ETag, bbox).
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
            {
                "__type__": "layer",
                "name": collection.name,
                "type": "RASTER",
                "status": "ON",
                "tileindex": index_layer,
                "tileitem": "location",
                "tilesrs": "src_srs",
                "projection": [f"init={INDEX_CRS.lower()}"],
                "processing": ["RESAMPLE=AVERAGE"],
                "metadata": {"wms_title": collection.title, **srs_metadata},
            },
        ],
    }


def render(mapfile: dict) -> str:
    """Mapfile text, refused if MapServer 8.0 would reject it."""
    import mappyfile  # imported here: DAG files use this module and must parse fast

    errors = mappyfile.validate(mapfile, version=MAPSERVER_VERSION)
    if errors:
        raise MapfileError("; ".join(f"{e.get('error')} at {e.get('path', '')}" for e in errors))
    return mappyfile.dumps(mapfile, indent=2)


def s3fs_metadata(uid: str, gid: str, mtime: float | None = None) -> dict[str, str]:
    """Object metadata s3fs turns into file ownership on the MapServer host."""
    return {"uid": uid, "gid": gid, "mode": FILE_MODE,
            "mtime": str(int(mtime if mtime is not None else time.time()))}

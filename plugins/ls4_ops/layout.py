"""The bucket layout: the only module that knows how keys are built.

    {band}/{county}/{agency}_{yyyy}/{type}/{stage}/{file}

Every other module parses and builds keys through this one; nothing else
splits a key on ``/``. Keys are user input, so every part is checked against
a strict pattern before it can reach SQL, a mapfile, GDAL or a shell, and a
key that does not fit raises :class:`LayoutError` with a reason a person can
act on.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# Band prefix -> image bands an upload under it has (and its COG keeps).
BANDS = {"bw": 1, "nc": 3}
BAND_PREFIXES = tuple(f"{band}/" for band in BANDS)
TYPES = ("frames", "index", "mosaic")
STAGES = ("scanned", "georef", "cog")
UPLOAD_EXTENSIONS = (".tif", ".TIF")
OUTPUT_EXTENSION = ".tif"

MAPFILE_PREFIX = "mapfiles/"
MAPFILE_EXTENSION = ".map"
PREVIEW_EXTENSION = ".html"
WORK_PREFIX = "ls4-work/"
# Where maintenance moves what it takes out of service (``quarantine_key``).
QUARANTINE_PREFIX = "quarantine/"
# Every collection's footprints in one file (the original's hourly job).
COMPILED_INDEX_KEY = "geojson/compiled_historical_indexes.geojson"
TILE_INDEX_DIR = "tile_index"
OVERVIEW_DIR = "overview"
# PostgreSQL truncates identifiers longer than this; a truncated table name
# could collide with another collection's, so such names are refused.
MAX_IDENTIFIER_LENGTH = 63
# Long enough for any real scan name; longer ones would overflow the 254
# characters of the tile index's shapefile fields (location, download links).
MAX_FILENAME_LENGTH = 100

_COUNTY = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_AGENCY_YEAR = re.compile(r"(?P<agency>[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_(?P<year>(?:18|19|20)[0-9][0-9])")
_FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_COLLECTION = re.compile(r"[a-z][a-z0-9_]*")
# Agencies whose frames carry no roll: {date}_{frame}.tif
ROLLESS_AGENCIES = frozenset({"ams", "usgs"})
STRATMAP_AGENCIES = frozenset({"stratmap"})
MULTIPLE = "MULTIPLE"


class LayoutError(ValueError):
    """A key that does not fit the bucket layout."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key!r} does not fit the layout {{band}}/{{county}}/{{agency}}_{{yyyy}}/"
                         f"{{type}}/{{stage}}/{{file}}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, order=True)
class Collection:
    band: str
    county: str
    agency: str
    year: str
    type: str

    @property
    def name(self) -> str:
        return f"{self.county}_{self.agency}_{self.year}_{self.type}"

    @property
    def table(self) -> str:
        """PostGIS table of the tile index (validated identifier)."""
        return self.name

    @property
    def dag_id(self) -> str:
        return f"ls4_{self.name}"

    @property
    def root(self) -> str:
        return f"{self.band}/{self.county}/{self.agency}_{self.year}/{self.type}/"

    def prefix(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        return f"{self.root}{stage}/"

    @property
    def mapfile_key(self) -> str:
        return f"{MAPFILE_PREFIX}{self.name}{MAPFILE_EXTENSION}"

    @property
    def preview_key(self) -> str:
        """The preview page, beside the mapfile: the mapfile sync brings both to the MapServer host."""
        return f"{MAPFILE_PREFIX}{self.name}{PREVIEW_EXTENSION}"

    @property
    def tile_index_prefix(self) -> str:
        return f"{self.prefix('cog')}{TILE_INDEX_DIR}/"

    @property
    def tile_index_zip_key(self) -> str:
        return f"{self.tile_index_prefix}{self.name}_idx.zip"

    def tile_index_key(self, extension: str) -> str:
        """Key of one shapefile part, e.g. ``tile_index_key(".shp")``."""
        return f"{self.tile_index_prefix}{self.name}{extension}"

    @property
    def overview_prefix(self) -> str:
        return f"{self.prefix('cog')}{OVERVIEW_DIR}/"

    def overview_key(self, generation: int, zoom: int) -> str:
        """The collection overview showing the index at ``generation``, on the grid of web-map
        zoom level ``zoom``: a new key for every version, so MapServer never reads a file
        that changed under it."""
        return f"{self.overview_prefix}{self.name}_overview_{generation}_z{zoom}.tif"

    def cog_key(self, stem: str) -> str:
        return f"{self.prefix('cog')}{stem}{OUTPUT_EXTENSION}"

    def work_key(self, stem: str, etag: str, name: str) -> str:
        """Intermediate artefact of one upload version, e.g. its compressed copy.

        Keyed by the upload's ETag so that concurrent runs on different
        versions never share a file.
        """
        return f"{WORK_PREFIX}{self.name}/{stem}/{etag.strip(chr(34))}/{name}"

    def is_cog_key(self, key: str) -> bool:
        """A COG of this collection (not a tile-index file under ``cog/``)."""
        directory, filename = posixpath.split(key)
        return directory + "/" == self.prefix("cog") and filename.endswith(OUTPUT_EXTENSION)

    @property
    def title(self) -> str:
        """Human title for the WMS, e.g. ``Anderson County AMS 1960 Frames``."""
        county = self.county.replace("_", " ").title()
        agency = self.agency.replace("_", " ").upper()
        return f"{county} {agency} {self.year} {self.type.title()}"

    def to_dict(self) -> dict[str, str]:
        return {"band": self.band, "county": self.county, "agency": self.agency,
                "year": self.year, "type": self.type}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "Collection":
        collection = cls(**{k: data[k] for k in ("band", "county", "agency", "year", "type")})
        return parse_key(collection.prefix("georef") + "x.tif").collection


@dataclass(frozen=True)
class UploadKey:
    """A parsed key of an image under ``{stage}/``."""

    key: str
    collection: Collection
    stage: str
    filename: str

    @property
    def stem(self) -> str:
        return _split_extension(self.filename)[0]

    @property
    def cog_key(self) -> str:
        return self.collection.cog_key(self.stem)

    def scanned_candidates(self) -> list[str]:
        """Keys where the original scan of this georef upload may be, most likely first."""
        prefix = self.collection.prefix("scanned")
        return [f"{prefix}{stem}{ext}" for stem in scanned_stems(self.collection, self.stem)
                for ext in UPLOAD_EXTENSIONS]


class OriginalScans:
    """A collection's scans, to find the original of each georef upload.

    Names are compared without regard to case (``USDA_1958_12_a.TIF`` is a
    tile of ``usda_1958_12.tif``); an exact match wins.
    """

    def __init__(self, scanned_keys: Iterable[str]):
        self._exact = set(scanned_keys)
        self._folded = {key.casefold(): key for key in sorted(self._exact, reverse=True)}

    def find(self, upload: UploadKey) -> str | None:
        candidates = upload.scanned_candidates()
        exact = next((key for key in candidates if key in self._exact), None)
        return exact or next((self._folded[key.casefold()] for key in candidates
                              if key.casefold() in self._folded), None)


def _split_extension(filename: str) -> tuple[str, str]:
    # Not posixpath.splitext: it takes ".tif" for a stem without extension.
    stem, dot, extension = filename.rpartition(".")
    return (stem, dot + extension) if dot else (filename, "")


def is_folder_marker(key: str) -> bool:
    """An empty ``.../`` object (what "Create folder" makes in S3 consoles): not an upload."""
    return key.endswith("/")


def parse_key(key: str) -> UploadKey:
    """Parse an image key; raise :class:`LayoutError` if it does not fit."""
    if not isinstance(key, str):
        raise LayoutError(repr(key), f"a key is text, not {type(key).__name__}")
    if not key:
        raise LayoutError(key, "empty key")
    parts = key.split("/")
    if len(parts) != 6:
        raise LayoutError(key, f"expected 6 path parts, found {len(parts)}")
    band, county, agency_year, type_, stage, filename = parts
    if band not in BANDS:
        raise LayoutError(key, f"band folder {band!r} must be one of {', '.join(BANDS)}")
    if not _COUNTY.fullmatch(county):
        raise LayoutError(key, f"county folder {county!r} must be lower case letters, digits "
                               "and single underscores (spaces as _)")
    match = _AGENCY_YEAR.fullmatch(agency_year)
    if not match:
        raise LayoutError(key, f"folder {agency_year!r} must be {{agency}}_{{yyyy}} in lower case, "
                               "e.g. ams_1960")
    if type_ not in TYPES:
        raise LayoutError(key, f"type folder {type_!r} must be one of {', '.join(TYPES)}")
    if stage not in STAGES:
        raise LayoutError(key, f"stage folder {stage!r} must be one of {', '.join(STAGES)}")
    stem, extension = _split_extension(filename)
    if extension not in UPLOAD_EXTENSIONS:
        raise LayoutError(key, f"file {filename!r} must end in .tif or .TIF")
    if not _FILE_STEM.fullmatch(stem) or ".." in stem:
        raise LayoutError(key, f"file name {filename!r} may only use A-Z, a-z, 0-9, _, - and . "
                               "(no spaces, quotes or accents): rename it")
    if len(filename) > MAX_FILENAME_LENGTH:
        raise LayoutError(key, f"file name is {len(filename)} characters long; rename it to at most "
                               f"{MAX_FILENAME_LENGTH} (the tile index's fields hold 254)")
    collection = Collection(band, county, match["agency"], match["year"], type_)
    name = collection.name
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise LayoutError(key, f"collection name {name!r} is longer than "
                               f"{MAX_IDENTIFIER_LENGTH} characters")
    return UploadKey(key=key, collection=collection, stage=stage, filename=filename)


def collection_of(key: str) -> str:
    """The name of the collection ``key`` belongs to; empty when it fits no collection."""
    try:
        return parse_key(key).collection.name
    except LayoutError:
        return ""


def overview_zoom(overview_key: str) -> int:
    """The zoom level of the grid an overview (``Collection.overview_key``) lies on."""
    return int(overview_key.rsplit("_z", 1)[1].removesuffix(OUTPUT_EXTENSION))


def georef_key(collection: Collection, name: str, bucket: str) -> str:
    """A georef upload named by its key, its ``s3://{bucket}/`` URL, or its file name alone."""
    key = name.removeprefix(f"s3://{bucket}/")
    return key if "/" in key else collection.prefix("georef") + key


def is_output_key(key: str) -> bool:
    """A key under some collection's ``cog/`` folder: written by ls4, not uploaded."""
    parts = key.split("/")
    return len(parts) >= 6 and parts[4] == "cog"


def is_collection_output(key: str) -> bool:
    """A tile-index file (``Collection.tile_index_key``, the zip) or a collection overview
    (``Collection.overview_key``): what ls4 writes under a collection's ``cog/`` besides COGs."""
    directory, filename = posixpath.split(key)
    folder, subfolder = posixpath.split(directory)
    try:
        cog_folder = parse_key(f"{folder}/x{OUTPUT_EXTENSION}")
    except LayoutError:
        return False
    if cog_folder.stage != "cog":
        return False
    name = cog_folder.collection.name
    if subfolder == TILE_INDEX_DIR:
        return filename == posixpath.basename(cog_folder.collection.tile_index_zip_key) or \
            _split_extension(filename)[0] == name
    return subfolder == OVERVIEW_DIR and re.fullmatch(rf"{name}_overview_[0-9]+_z[0-9]+\.tif", filename) is not None


def published_collection(key: str) -> tuple[str, str] | None:
    """(collection name, extension) of a mapfile or preview page key (``Collection.mapfile_key``,
    ``Collection.preview_key``); None for any other object, in ``mapfiles/`` or not."""
    if not key.startswith(MAPFILE_PREFIX):
        return None
    name, extension = _split_extension(key[len(MAPFILE_PREFIX):])
    if extension not in (MAPFILE_EXTENSION, PREVIEW_EXTENSION) or not _COLLECTION.fullmatch(name) \
            or len(name) > MAX_IDENTIFIER_LENGTH:
        return None
    return name, extension


def work_collection(key: str) -> str | None:
    """The collection an intermediate (``Collection.work_key``) belongs to; None for other keys."""
    if not key.startswith(WORK_PREFIX):
        return None
    name = key[len(WORK_PREFIX):].split("/", 1)[0]
    return name if _COLLECTION.fullmatch(name) else None


def quarantine_key(key: str, stamp: str) -> str:
    """Where maintenance run ``stamp`` keeps an object it took out of service."""
    return f"{QUARANTINE_PREFIX}{stamp}/{key}"


def validate_identifier(name: str) -> str:
    """Return ``name`` if it is safe as an SQL identifier derived from a key."""
    if len(name) > MAX_IDENTIFIER_LENGTH or not _COLLECTION.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid ls4 identifier")
    return name


# --- frame attributes from file names -------------------------------------

# [0-9], not \d: \d also matches digits of other scripts.
_DATE = r"(?P<date>[0-9]{8}|[0-9]{6}|[0-9]{4}-[0-9]{2}-[0-9]{2})"
_TOKEN = r"[A-Za-z0-9]+"
_FRAME_WITH_ROLL = re.compile(rf"{_DATE}_(?P<roll>{_TOKEN})-(?P<frame>{_TOKEN})")
_FRAME_NO_ROLL = re.compile(rf"{_DATE}_(?P<frame>{_TOKEN})")
_STRATMAP = re.compile(rf"(?P<roll>{_TOKEN})_(?P<frame>{_TOKEN})_{_DATE}")
_MOSAIC = re.compile(r"mosaic(?P<frame>[0-9]+)", re.IGNORECASE)
# Agency words start with a letter, so the first all-digit word is the year:
# usda_bcr_1958_12_a is agency usda_bcr, year 1958, sheet 12, tile a.
_INDEX_SHEET = re.compile(
    r"(?P<agency>[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*)_(?P<year>[0-9]{4})"
    r"_(?P<sheet>[A-Za-z0-9]+)(?:_(?P<note>[A-Za-z0-9_-]+))?"
)


@dataclass(frozen=True)
class FrameAttributes:
    date: str = ""
    roll: str = ""
    frame_num: str = ""
    parsed: bool = False
    problem: str = field(default="", compare=False)

    def as_record(self) -> dict[str, str]:
        return {"date": self.date, "roll": self.roll, "frame_num": self.frame_num}


def _name_patterns(collection: Collection) -> list[tuple[re.Pattern, str]]:
    if collection.type == "mosaic":
        return [(_MOSAIC, "mosaic{N}.tif")]
    if collection.type == "index":
        return [(_INDEX_SHEET, "{agency}_{year}_{sheet}[_{tile or dpi}].tif")]
    if collection.agency in STRATMAP_AGENCIES:
        return [(_STRATMAP, "{roll}_{frame}_{date}.tif")]
    if collection.agency in ROLLESS_AGENCIES:
        return [(_FRAME_NO_ROLL, "{date}_{frame}.tif")]
    return [(_FRAME_WITH_ROLL, "{date}_{roll}-{frame}.tif")]


def frame_attributes(collection: Collection, stem: str) -> FrameAttributes:
    """Index attributes from a file name; empty (and ``problem`` set) if it does not parse."""
    patterns = _name_patterns(collection)
    for pattern, _ in patterns:
        match = pattern.fullmatch(stem)
        if match:
            groups = match.groupdict()
            if collection.type == "mosaic":
                return FrameAttributes(MULTIPLE, MULTIPLE, groups["frame"], parsed=True)
            if collection.type == "index":
                return FrameAttributes(groups["year"], "", groups["sheet"], parsed=True)
            return FrameAttributes(groups["date"], groups.get("roll") or "", groups["frame"], parsed=True)
    expected = " or ".join(shape for _, shape in patterns)
    return FrameAttributes(problem=f"file name {stem!r} does not match {expected}; "
                                   "its date, roll and frame stay empty in the index")


def scanned_stems(collection: Collection, stem: str) -> list[str]:
    """Stems the original scan may have, most likely first.

    Index tiles and dpi variants map to the untiled sheet; a dpi variant may
    also have been scanned under its own name.
    """
    if collection.type == "index":
        match = _INDEX_SHEET.fullmatch(stem)
        if match and match["note"]:
            return [f"{match['agency']}_{match['year']}_{match['sheet']}", stem]
    return [stem]


def needs_scan(collection: Collection) -> bool:
    """Frames and index sheets have an original scan; mosaics do not."""
    return collection.type in ("frames", "index")

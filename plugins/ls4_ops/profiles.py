"""How ls4 writes its rasters: creation options and GDAL settings, as data.

As in rio-cogeo's ``cog_profiles``, the options live in one registry,
``PROFILES``, and the raster steps only read it. rio-cogeo's profiles are
the base wherever they apply; what ls4 adds to them is written here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rio_cogeo.profiles import cog_profiles

from ls4_ops.layout import BANDS

Options = Mapping[str, Any]


@dataclass(frozen=True)
class RasterProfiles:
    """The registry: what each raster step writes, and the GDAL settings it runs with."""

    # The side of the square tiles of every file ls4 writes, in pixels.
    block_size: int
    # Per band prefix: the GTiff profile of ``compress``'s lossless
    # intermediate, all but its grid (size, CRS, transform).
    intermediate: Mapping[str, Options]
    # How the intermediate's external .ovr is written, as the GDAL
    # configuration options of GDAL's overview builder (``add_overviews``
    # writes the same layout itself when it averages in numpy).
    intermediate_overviews: Options
    # Per band prefix: the COG driver's options for the published COG.
    cog: Mapping[str, Options]
    # The COG driver's options for the collection overview: lossless, because
    # each update copies what no change touched from the version before.
    overview_cog: Options
    # Per step ("compress", "overviews", "cog"): the GDAL configuration it runs with.
    env: Mapping[str, Options]


# rio-cogeo's raw profile: a tiled 512 x 512, pixel-interleaved GTiff.
_TILED = cog_profiles.get("raw")
_BLOCK_SIZE = _TILED["blockxsize"]
# The intermediates are not compressed. Every codec costs more CPU than it
# saves in transfer (6000x6000 RGB benchmark frame, compress stage: none
# 0.7 s of CPU for 108 MB; ZSTD-1 1.1 s for 75 MB, 1.5 s for 61 MB with the
# predictor; DEFLATE-1 with the predictor 1.8 s for 48 MB), and the GDAL
# that writes the COG (ls4_ops.turbo_gdal) reads no ZSTD.
_UNCOMPRESSED = "NONE"

# rasterio takes GDAL_CACHEMAX in bytes (a small int would mean a few bytes).
_CACHE = {"GDAL_CACHEMAX": 256 * 2**20}


def _intermediate(band: str, photometric: str) -> dict:
    return {
        **_TILED,
        "count": BANDS[band],
        "dtype": "uint8",
        # No nodata value: every 8-bit value, white included, stays a colour;
        # the internal mask says what is transparent.
        "nodata": None,
        "photometric": photometric,
        "compress": _UNCOMPRESSED,
        "bigtiff": "IF_SAFER",
    }


def _cog(rio_cogeo_profile: str, **codec_options: Any) -> dict:
    profile = cog_profiles.get(rio_cogeo_profile)
    return {
        "COMPRESS": profile["compress"],
        "BLOCKSIZE": profile["blockxsize"],
        # Reuse the data overviews of the .ovr; only the mask's are computed here.
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": "AVERAGE",
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
        **codec_options,
    }


_LOSSLESS_COG = _cog("deflate", PREDICTOR="YES")

PROFILES = RasterProfiles(
    block_size=_BLOCK_SIZE,
    intermediate={"bw": _intermediate("bw", "MINISBLACK"), "nc": _intermediate("nc", "RGB")},
    intermediate_overviews={
        "COMPRESS_OVERVIEW": _UNCOMPRESSED,
        # GDAL 3.10 averages band-interleaved overviews with the mask;
        # pixel-interleaved ones blend transparent pixels into edges.
        "INTERLEAVE_OVERVIEW": "BAND",
        "GDAL_TIFF_OVR_BLOCKSIZE": _BLOCK_SIZE,
        "BIGTIFF_OVERVIEW": "IF_SAFER",
    },
    cog={
        "bw": _LOSSLESS_COG,
        # The COG driver writes 3-band JPEG as YCbCr, as rio-cogeo's profile asks.
        "nc": _cog("jpeg", QUALITY=85),
    },
    overview_cog=_LOSSLESS_COG,
    env={
        # The mask goes inside the GeoTIFF, not into a .msk beside it.
        "compress": {**_CACHE, "GDAL_TIFF_INTERNAL_MASK": True},
        "overviews": {**_CACHE, "GDAL_NUM_THREADS": "ALL_CPUS"},
        # The settings of the bundled GDAL that writes the COG (ls4_ops.turbo_gdal).
        # ls4's GDAL environment sets GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR
        # for S3, which would also hide the local .ovr beside to_cog's source.
        "cog": {**_CACHE, "GDAL_NUM_THREADS": "ALL_CPUS", "GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"},
    },
)

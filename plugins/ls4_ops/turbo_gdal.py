"""GDAL's COG driver with libjpeg-turbo: the GDAL that pyogrio's wheel bundles, through its C API.

rasterio's wheel bundles GDAL 3.10 with IJG libjpeg 9, which encodes JPEG
at half the speed of libjpeg-turbo; writing the JPEG COG is most of a
frame's CPU. pyogrio's wheel (pinned in requirements.lock, already a
dependency for the tile index's shapefile) bundles GDAL 3.12 built with
libjpeg-turbo and the GTiff/COG driver, so ``to_cog`` writes through it.
Nothing is built or installed for it. Its codecs differ from rasterio's: it
reads no ZSTD, so the intermediates ``to_cog`` reads are uncompressed.

Only ``GDALTranslate`` is called, with the same options as the
``gdal_translate`` command line. Configuration is set per thread around
the call, so rasterio's GDAL and this one never share settings.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

# GDALOpenEx flags (gdal.h)
_OF_RASTER = 0x02
_OF_VERBOSE_ERROR = 0x40


class TurboGdalError(RuntimeError):
    """The bundled GDAL failed; the message is GDAL's own."""


@functools.cache
def _library() -> ctypes.CDLL:
    """pyogrio's libgdal, with its data files (GDAL's, and PROJ's database for the CRS)."""
    # Found without importing pyogrio, which imports geopandas and pandas (0.35 s).
    package = os.path.dirname(importlib.util.find_spec("pyogrio").origin)
    found = glob.glob(os.path.join(package + ".libs", "libgdal*.so*"))
    if len(found) != 1:
        raise TurboGdalError(f"expected one libgdal beside {package}, found {found}: has pyogrio's wheel changed?")
    lib = ctypes.CDLL(found[0], mode=os.RTLD_LOCAL)
    # Before anything else: GDAL looks for its data files once, and pyogrio,
    # when imported later in the same process, checks that they were found.
    lib.CPLSetConfigOption(b"GDAL_DATA", os.path.join(package, "gdal_data").encode())
    lib.OSRSetPROJSearchPaths.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.OSRSetPROJSearchPaths((ctypes.c_char_p * 2)(os.path.join(package, "proj_data").encode(), None))
    lib.GDALAllRegister()
    lib.GDALVersionInfo.restype = ctypes.c_char_p
    lib.CPLGetLastErrorMsg.restype = ctypes.c_char_p
    lib.CPLGetThreadLocalConfigOption.restype = ctypes.c_char_p
    lib.CPLGetThreadLocalConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.CPLSetThreadLocalConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.GDALOpenEx.restype = ctypes.c_void_p
    lib.GDALOpenEx.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALTranslateOptionsNew.restype = ctypes.c_void_p
    lib.GDALTranslateOptionsNew.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]
    lib.GDALTranslateOptionsFree.argtypes = [ctypes.c_void_p]
    lib.GDALTranslate.restype = ctypes.c_void_p
    lib.GDALTranslate.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.GDALClose.restype = ctypes.c_int
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.CPLErrorReset.argtypes = []
    return lib


def version() -> str:
    return _library().GDALVersionInfo(b"RELEASE_NAME").decode()


def jpeg_library() -> str:
    """Which JPEG library the bundled GDAL links (its own banner, as built in)."""
    with open(_library()._name, "rb") as binary:
        return "libjpeg-turbo" if b"libjpeg-turbo version" in binary.read() else "other"


def _failure(lib: ctypes.CDLL, what: str) -> TurboGdalError:
    message = (lib.CPLGetLastErrorMsg() or b"").decode(errors="replace")
    return TurboGdalError(f"{what}: {message or 'GDAL gave no message'}")


def translate(src: str, dst: str, driver: str, creation_options: Mapping[str, Any],
              config: Mapping[str, Any]) -> None:
    """``gdal_translate -of driver -co K=V ... src dst`` with ``config`` set for this thread."""
    lib = _library()
    args = ["-of", driver]
    for name, value in creation_options.items():
        args += ["-co", f"{name}={value}"]
    argv = (ctypes.c_char_p * (len(args) + 1))(*[a.encode() for a in args], None)
    previous = {name: lib.CPLGetThreadLocalConfigOption(name.encode(), None) for name in config}
    for name, value in config.items():
        lib.CPLSetThreadLocalConfigOption(name.encode(), _config_value(value).encode())
    lib.CPLErrorReset()
    options = source = None
    try:
        source = lib.GDALOpenEx(src.encode(), _OF_RASTER | _OF_VERBOSE_ERROR, None, None, None)
        if not source:
            raise _failure(lib, f"cannot open {src}")
        options = lib.GDALTranslateOptionsNew(argv, None)
        if not options:
            raise _failure(lib, f"bad options {args}")
        failed = ctypes.c_int(0)
        written = lib.GDALTranslate(dst.encode(), source, options, ctypes.byref(failed))
        # Closing flushes the last blocks: a failure there is a failed write too.
        if not written or lib.GDALClose(written) != 0 or failed.value:
            raise _failure(lib, f"cannot write {dst}")
    finally:
        if options:
            lib.GDALTranslateOptionsFree(options)
        if source:
            lib.GDALClose(source)
        for name, value in previous.items():
            lib.CPLSetThreadLocalConfigOption(name.encode(), value)


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return str(value)

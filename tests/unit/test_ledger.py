"""The run ledger's record of how a stage wrote its output."""

import json

import pytest

from ls4_ops import ledger
from ls4_ops.profiles import PROFILES


@pytest.mark.parametrize("band", ["bw", "nc"])
@pytest.mark.parametrize("stage", ledger.STAGES)
def test_a_stages_options_are_the_registrys_and_survive_json(stage, band):
    options = ledger.stage_options(stage, band)
    assert options["gdal"] == dict(PROFILES.env[stage])
    assert options["creation"]
    # Stored as jsonb and matched with @>: every value must come back as it went in.
    assert json.loads(json.dumps(options)) == options


def test_the_published_cogs_options_tell_the_bands_apart():
    assert ledger.stage_options("cog", "nc")["creation"]["QUALITY"] == 85
    assert ledger.stage_options("cog", "bw")["creation"]["COMPRESS"] == "DEFLATE"
    assert "QUALITY" not in ledger.stage_options("cog", "bw")["creation"]


def test_the_software_is_named_with_its_version():
    assert set(ledger.software()) == {"gdal", "gdal-jpeg-cog", "rasterio", "rio-cogeo"}
    assert all(version[0].isdigit() for version in ledger.software().values())

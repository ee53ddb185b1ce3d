"""Per-upload raster stages: compress -> overviews -> COG.

Heavy libraries (rasterio, geopandas, mappyfile) are imported inside
``execute``: DAG files import these operators and must parse fast.

Each stage reads its input from S3 and writes its output to S3, so the three
tasks of one upload may run on different workers. Intermediates live under
``ls4-work/`` keyed by the upload's ETag and are removed once its COG exists.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from airflow.sdk.exceptions import AirflowFailException

from ls4_ops import scratch
from ls4_ops.errors import BadUpload
from ls4_ops.layout import UploadKey, parse_key
from ls4_ops.operators.base import CollectionOperator
from ls4_ops.plan import SOURCE_ETAG_METADATA, SOURCE_KEY_METADATA, Notice
from ls4_ops.s3env import vsis3_path

COMPRESSED = "compressed.tif"


class FrameStageOperator(CollectionOperator):
    """One raster stage of one upload; ``upload`` is an item of the plan."""

    template_fields = ("upload",)
    ui_color = "#d8e8f8"

    def __init__(self, *, upload: dict, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.upload = upload

    def parsed(self) -> UploadKey:
        return parse_key(self.upload["key"])

    def work_key(self, name: str) -> str:
        upload = self.parsed()
        return self.collection.work_key(upload.stem, self.upload["etag"], name)

    def execute(self, context):
        from ls4_ops import ledger

        started, clock = datetime.now(timezone.utc), time.perf_counter()
        outcome, reason, written = ledger.FAILED, "", []
        try:
            result = self.run_stage()
            outcome, written = ledger.SUCCESS, self.outputs(result)
            return result
        except BadUpload as error:
            outcome, reason = ledger.BAD_UPLOAD, error.reason
            self.remember_failure(error)
            self.notify([Notice("upload cannot be processed", error.reason, self.upload["key"], self.upload["etag"])])
            # Retrying cannot fix a bad file: fail now, the rest of the collection goes on.
            raise AirflowFailException(str(error)) from error
        except BaseException as error:  # a timeout or a kill too: the ledger says how the stage ended
            reason = f"{type(error).__name__}: {error}"
            raise
        finally:
            self.keep_record(context, started, time.perf_counter() - clock, outcome, reason, written)

    def keep_record(self, context, started: datetime, seconds: float, outcome: str, reason: str,
                    written: list[str]) -> None:
        """The stage's row of the run ledger; a ledger that cannot be written fails nothing."""
        from ls4_ops import ledger

        entry = ledger.StageRecord(
            key=self.upload["key"], etag=self.upload["etag"], collection=self.collection.name, stage=self.stage,
            run_id=context["run_id"], try_number=context["ti"].try_number, started=started, seconds=seconds,
            outcome=outcome, reason=reason, outputs=written,
            software=ledger.software(), options=ledger.stage_options(self.stage, self.collection.band))
        try:
            with self.postgis.begin() as connection:
                ledger.record(connection, entry)
        except Exception:  # noqa: BLE001 - the stage's own outcome is what the run must report
            self.log.exception("could not write the run ledger's row of %s %s", self.stage, self.upload["key"])

    def outputs(self, result) -> list[str]:
        """The keys the stage wrote, given what :meth:`run_stage` returned."""
        raise NotImplementedError

    def remember_failure(self, error: BadUpload) -> None:
        """So that later runs leave this version alone until a new one is uploaded."""
        from ls4_ops import failures

        try:
            with self.postgis.begin() as connection:
                failures.record(connection, self.upload["key"], self.upload["etag"], error.reason)
        except Exception:  # the upload's own failure is what the run must report
            self.log.exception("could not record that %s failed; a later run tries it again", self.upload["key"])

    def run_stage(self):
        raise NotImplementedError


class CompressOperator(FrameStageOperator):
    """Reproject to EPSG:3857 if needed, keep the prefix's bands, uncompressed 512 px tiles."""

    stage = "compress"

    def outputs(self, result) -> list[str]:
        return [self.work_key(COMPRESSED)]

    def run_stage(self):
        from ls4_ops import raster

        source = vsis3_path(self.bucket_name, self.upload["key"])
        with scratch.workspace("compress") as directory:
            local = os.path.join(directory, COMPRESSED)
            with self.s3.endpoint().rasterio_env():
                info = raster.compress(source, local, self.collection.band, key=self.upload["key"],
                                       max_pixels=self.settings.max_pixels)
            self.s3.upload(local, self.bucket_name, self.work_key(COMPRESSED))
        self.log.info("compressed %s: %s", self.upload["key"], info)
        return info


class OverviewsOperator(FrameStageOperator):
    """Averaged overviews of the compressed copy, as an external .ovr."""

    stage = "overviews"

    def outputs(self, result) -> list[str]:
        from ls4_ops import raster

        return [self.work_key(raster.overview_file(COMPRESSED))] if result else []  # no factors: no .ovr

    def run_stage(self):
        from ls4_ops import raster

        overviews = raster.overview_file(COMPRESSED)
        with self.s3.downloaded(self.bucket_name, {self.work_key(COMPRESSED): COMPRESSED}) as directory:
            factors = raster.add_overviews(os.path.join(directory, COMPRESSED))
            if factors:
                self.s3.upload(os.path.join(directory, overviews), self.bucket_name, self.work_key(overviews))
        self.log.info("overviews of %s: %s", self.upload["key"], factors)
        return factors


class CogOperator(FrameStageOperator):
    """Write and validate the COG, publish it public-read, upsert its tile-index row,
    drop the intermediates."""

    stage = "cog"

    def outputs(self, result) -> list[str]:
        return [self.upload["cog_key"]]

    def run_stage(self):
        import rasterio

        from ls4_ops import failures, raster, tileindex

        overviews = raster.overview_file(COMPRESSED)
        work = {self.work_key(COMPRESSED): COMPRESSED}
        if self.s3.check_for_key(self.work_key(overviews), self.bucket_name):
            work[self.work_key(overviews)] = overviews
        with self.s3.downloaded(self.bucket_name, work) as directory:
            cog = os.path.join(directory, "cog.tif")
            info = raster.to_cog(os.path.join(directory, COMPRESSED), cog, self.collection.band,
                                 key=self.upload["key"])
            cog_etag = self.s3.upload(
                cog, self.bucket_name, self.upload["cog_key"], acl=self.public_acl, content_type="image/tiff",
                metadata={SOURCE_ETAG_METADATA: self.upload["etag"], SOURCE_KEY_METADATA: self.upload["key"]},
            )
            with rasterio.open(cog) as written:  # its mask is at hand: the footprint costs no S3 read
                row = tileindex.index_row(written, self.collection, {**self.upload, "cog_etag": cog_etag},
                                          self.settings)
        with self.postgis.begin() as connection:
            tileindex.upsert(connection, self.collection, [row])
            failures.forget(connection, self.upload["key"])
        self.s3.delete_objects(self.bucket_name, list(work))
        self.log.info("published and indexed %s: %s", self.upload["cog_key"], info)
        return info

"""Collection-level tasks: plan the run, rebuild the tile index, publish the
mapfile, and report what the run did."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor

from airflow.sdk.exceptions import AirflowFailException

from ls4_ops import mapfile
from ls4_ops.layout import OriginalScans, frame_attributes, needs_scan, parse_key
from ls4_ops.operators.base import CollectionOperator
from ls4_ops.operators.notifications import new_since_last_success, send
from ls4_ops.plan import plan_uploads, run_request

# Reading footprints is I/O bound (a HEAD and a range GET per COG).
FOOTPRINT_THREADS = 8


class PlanUploadsOperator(CollectionOperator):
    """List the collection's uploads and return those that need raster work.

    Also makes new scans and georef uploads public-read, and notifies about
    uploads that cannot be processed or whose original scan is missing.
    ``keys`` and ``force`` come from a manual run's conf: a bad conf, or a
    key that cannot be processed, fails the task before anything is done.
    """

    template_fields = ("keys", "force")

    def __init__(self, *, keys: list[str] | str | None = None, force: bool | str = False, **kwargs):
        super().__init__(**kwargs)
        self.keys = keys
        self.force = force

    def execute(self, context):
        try:
            request = run_request(self.coll, self.bucket_name, self.keys, self.force)
        except ValueError as error:
            raise AirflowFailException(str(error)) from error
        georef = self.s3.list_objects(self.bucket_name, self.coll.prefix("georef"))
        scanned = self.scans()
        plan = plan_uploads(self.coll, georef, self.processed_etags(), request)
        if plan.not_found:
            raise AirflowFailException("nothing was processed; these keys cannot be: " + "; ".join(
                f"{key}: {reason}" for key, reason in plan.not_found))

        # A forced run goes over everything again, notifications included.
        is_new = (lambda obj: True) if request.force else (lambda obj: new_since_last_success(obj, context))
        by_key = {obj.key: obj for obj in georef}
        for key, reason in plan.problems:
            if is_new(by_key.get(key)):
                self.notify("upload not processed", reason, key)
        for obj in [*scanned.values(), *(by_key[item["key"]] for item in plan.todo)]:
            if is_new(obj):
                self.s3.set_public_read(self.bucket_name, obj.key)
        self.check_scans(plan.todo, OriginalScans(scanned))
        self.check_names(plan.todo)

        self.log.info("%d to process, %d up to date, %d problems", len(plan.todo), len(plan.up_to_date),
                      len(plan.problems))
        return plan.todo

    def processed_etags(self) -> dict[str, str]:
        cogs = self.cog_keys()
        with ThreadPoolExecutor(FOOTPRINT_THREADS) as pool:
            etags = pool.map(lambda key: self.s3.source_etag(self.bucket_name, key), cogs)
            return dict(zip(cogs, etags))

    def check_scans(self, todo: list[dict], scans: OriginalScans) -> None:
        if not needs_scan(self.coll):
            return
        for item in todo:
            upload = parse_key(item["key"])
            if scans.find(upload) is None:
                self.notify("original scan missing",
                            f"no original scan at {' or '.join(upload.scanned_candidates())}; the georef "
                            "upload is processed, upload the scan so its download link works", item["key"])

    def check_names(self, todo: list[dict]) -> None:
        for item in todo:
            attributes = frame_attributes(self.coll, parse_key(item["key"]).stem)
            if not attributes.parsed:
                self.notify("file name not understood", attributes.problem + "; it is processed anyway, "
                            "rename it to fill them in", item["key"])

    def notify(self, subject: str, reason: str, key: str) -> None:
        send(subject, reason, key=key, collection=self.coll.name, source=f"{self.dag_id}.{self.task_id}")


class BuildTileIndexOperator(CollectionOperator):
    """Rebuild the collection's tile index from its COGs: shapefile + zip in S3, table in PostGIS."""

    def execute(self, context):
        from ls4_ops import tileindex

        cogs = self.cog_keys()
        scanned = OriginalScans(self.scans())
        settings = self.settings
        with self.s3.endpoint().rasterio_env():
            with ThreadPoolExecutor(FOOTPRINT_THREADS) as pool:
                records = list(pool.map(
                    lambda key: tileindex.index_record(self.coll, key, settings, scanned), cogs))
        index = tileindex.build_index(records)
        if index.empty:
            raise AirflowFailException(f"{self.coll.name} has no COG yet: nothing to index")

        with tempfile.TemporaryDirectory(prefix="ls4-index-") as directory:
            files = tileindex.write_shapefile(index, self.coll, directory)
            # The zip last: it is what users download, and it appears only when complete.
            for key in sorted(files, key=lambda k: k == self.coll.tile_index_zip_key):
                self.s3.upload(files[key], self.bucket_name, key, acl="public-read")
        tileindex.load_postgis(index, self.postgres().get_sqlalchemy_engine(), self.coll.table)
        self.log.info("tile index of %s: %d features", self.coll.name, len(index))
        return {"extent": tileindex.extent(index), "count": len(index)}


class PublishMapfileOperator(CollectionOperator):
    """Build the mapfile with mappyfile and publish it to ``mapfiles/``.

    ``tile_index`` is what BuildTileIndexOperator returned (its extent is the map's).
    """

    template_fields = ("tile_index",)

    def __init__(self, *, tile_index, **kwargs):
        super().__init__(**kwargs)
        self.tile_index = tile_index

    def execute(self, context):
        settings = self.settings
        text = mapfile.render(mapfile.build(self.coll, list(self.tile_index["extent"]), wms_url=settings.wms_url,
                                            pg_service=settings.pg_service))
        with tempfile.NamedTemporaryFile("w", suffix=".map") as handle:
            handle.write(text)
            handle.flush()
            self.s3.upload(handle.name, self.bucket_name, self.coll.mapfile_key, content_type="text/plain",
                           metadata=mapfile.s3fs_metadata(settings.mapfile_uid, settings.mapfile_gid))
        url = mapfile.mapfile_url(self.coll, settings.wms_url)
        self.log.info("WMS of %s: %s&SERVICE=WMS&REQUEST=GetCapabilities", self.coll.name, url)
        return url


class ReportRunOperator(CollectionOperator):
    """Fail the run (so operators see it) when a planned upload has no current COG."""

    template_fields = ("planned",)

    def __init__(self, *, planned, **kwargs):
        super().__init__(**kwargs)
        self.planned = planned

    def execute(self, context):
        missing = [item["key"] for item in self.planned or []
                   if self.s3.source_etag(self.bucket_name, item["cog_key"]) != item["etag"]]
        if missing:
            raise AirflowFailException(
                f"{len(missing)} of {len(self.planned)} uploads were not processed: {', '.join(missing)}. "
                "Their task logs and notifications say why.")
        self.log.info("%d uploads processed", len(self.planned or []))

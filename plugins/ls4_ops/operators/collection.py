"""Collection-level tasks: plan the run, bring the tile index and the collection
overview up to date, publish the mapfile, wait until MapServer serves it, and
report what the run did."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ls4_ops import mapfile, plan, scratch, tileindex
from ls4_ops.errors import UploadsUnprocessed
from ls4_ops.operators.base import CollectionOperator
from ls4_ops.operators.notifications import last_success_start
from ls4_ops.s3env import vsis3_path

INDEX_WORK_XCOM = "index"
UNPROCESSED_XCOM = "unprocessed"
REPORT_TASK_ID = "report"


class PlanUploadsOperator(CollectionOperator, SkipMixin):
    """Decide what the run must do; return the uploads that need raster work.

    Looks at the collection's uploads, COGs and index (a listing of each
    prefix, one query, and a HEAD only for COGs the index does not vouch
    for). Makes new scans and uploads public-read and notifies about uploads
    that cannot be processed, missing scans and odd names. Index work that
    needs no raster work goes to ``tile_index`` by XCom (key ``index``). When
    there is nothing at all to do, every task after this one is skipped.

    :param keys: from a manual run's conf: the uploads to reprocess
    :param force: from a manual run's conf: reprocess the whole collection
    """

    template_fields = ("keys", "force")

    def __init__(self, *, keys: list[str] | str | None = None, force: bool | str = False, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.keys = keys
        self.force = force

    def execute(self, context):
        try:
            request = plan.run_request(self.collection, self.bucket_name, self.keys, self.force)
        except ValueError as error:
            raise AirflowFailException(str(error)) from error
        state = self.collection_state()
        state.sources = {key: self.s3.cog_source(self.bucket_name, key)
                         for key in plan.cogs_to_inspect(self.collection, state)}
        run = plan.plan_run(self.collection, state, request, since=last_success_start(context), settings=self.settings)
        if run.not_found:
            raise AirflowFailException("nothing was processed; these keys cannot be: " + "; ".join(
                f"{key}: {reason}" for key, reason in run.not_found))
        self.notify(run.notices)
        self.make_public(run.make_public)
        self.log.info("%d to process, %d up to date, %d failed before (left until they change), %d problems; "
                      "index: %d to add, %d links, %d to remove, publish %s", len(run.todo), len(run.up_to_date),
                      len(run.known_bad), len(run.problems), len(run.index.add), len(run.index.scan_links),
                      len(run.index.remove), run.index.publish)
        context["ti"].xcom_push(key=INDEX_WORK_XCOM, value=run.index.to_dict())
        unprocessed = run.unprocessed()
        context["ti"].xcom_push(key=UNPROCESSED_XCOM, value=unprocessed)
        if not run.has_work:
            self.log.info("nothing changed since the last run: nothing to do")
            # Uploads left unprocessed keep the run from looking clean: its report still says so.
            kept = {REPORT_TASK_ID} if run.problems or run.known_bad else set()
            self.skip(context["ti"], [task for task in self.get_direct_relatives(upstream=False)
                                      if task.task_id not in kept])
        return run.todo

    def collection_state(self) -> plan.CollectionState:
        from ls4_ops import failures

        with self.postgis.connect() as connection:
            indexed = tileindex.indexed(connection, self.collection)
            entry = tileindex.catalog_entry(connection, self.collection)
            failed = failures.failed(connection, self.collection)
        return plan.CollectionState(
            georef=self.s3.list_objects(self.bucket_name, self.collection.prefix("georef")),
            scanned=self.scans(),
            cogs=self.cogs(),
            indexed=indexed,
            generation=entry.generation,
            overview_generation=entry.overview_generation,
            published_index=self.shows(self.collection.tile_index_zip_key),
            published_mapfile=self.shows(self.collection.mapfile_key, {mapfile.FORMAT_METADATA: mapfile.FORMAT}),
            published_preview=self.shows(self.collection.preview_key),
            failed=failed,
        )


    def shows(self, key: str, required: dict | None = None) -> int | None:
        return tileindex.generation_shown(self.s3.metadata(self.bucket_name, key), required)


class TileIndexOperator(CollectionOperator):
    """Finish the index work of the run and publish the shapefile from the table.

    The frames of this run upserted their own rows. This task adds the rows
    of current COGs that have none, updates scan links, removes the COGs and
    rows of deleted uploads (notifying each), all in one transaction, and
    rewrites the shapefile and its zip from the table when they are behind
    it. Returns the index's extent, size and generation for the mapfile.

    :param index_work: what ``plan`` found to do (``IndexWork.to_dict()``)
    """

    template_fields = ("index_work",)

    def __init__(self, *, index_work: dict | None = None, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.index_work = index_work

    def execute(self, context):
        work = plan.IndexWork(**self.index_work)
        added = [self.row_of_existing_cog(item) for item in work.add]
        with self.postgis.begin() as connection:
            tileindex.ensure_table(connection, self.collection)
            tileindex.upsert(connection, self.collection, [row for row in added if row])
            tileindex.set_scan_links(connection, self.collection, work.scan_links)
            tileindex.delete(connection, self.collection, [item["cog_key"] for item in work.remove])
        deleted_cogs = [item["cog_key"] for item in work.remove if item["delete_cog"]]
        if deleted_cogs:
            self.s3.delete_objects(self.bucket_name, deleted_cogs)
        self.notify(plan.removal_notice(self.collection, item) for item in work.remove)
        return self.publish_shapefile(work.published_index)

    def row_of_existing_cog(self, item: dict) -> dict | None:
        """The row of a COG made by an earlier run, its footprint read from a small overview
        level of its mask; None (and a notice) when the COG cannot be read."""
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with self.s3.endpoint().rasterio_env(), \
                    rasterio.open(vsis3_path(self.bucket_name, item["cog_key"])) as cog:
                return tileindex.index_row(cog, self.collection, item, self.settings)
        except (RasterioIOError, ValueError) as error:
            self.notify([plan.Notice("COG not indexed", f"{item['cog_key']} cannot be read ({error}); it stays "
                                     "out of the index: reprocess the upload (a run with its key)", item["key"],
                                     item["etag"])])
            return None

    def publish_shapefile(self, published: int | None) -> dict:
        """Write the shapefile and zip from the table unless they show its generation already.

        ``published``: the generation they showed when the run was planned.
        """
        # One snapshot: the rows written out and the generation recorded are of the same table.
        with self.postgis.execution_options(isolation_level="REPEATABLE READ").begin() as connection:
            summary = tileindex.summary(connection, self.collection)
            if published != summary.generation:
                records = tileindex.read_records(connection, self.collection)
                with scratch.workspace("index") as directory:
                    files = tileindex.write_shapefile(records, self.collection, directory)
                    zip_file = files.pop(self.collection.tile_index_zip_key)
                    with ThreadPoolExecutor(len(files)) as uploads:
                        list(uploads.map(lambda key: self.publish_file(files[key], key, summary.generation), files))
                    # The zip last: it is what users download, and it appears only when complete.
                    self.publish_file(zip_file, self.collection.tile_index_zip_key, summary.generation)
        self.log.info("tile index of %s: %d features, generation %d", self.collection.name, summary.count,
                      summary.generation)
        return {"extent": summary.bounds and tileindex.extent(summary.bounds), "count": summary.count,
                "generation": summary.generation}

    def publish_file(self, path: str, key: str, generation: int) -> None:
        self.s3.upload(path, self.bucket_name, key, acl=self.public_acl,
                       metadata={tileindex.GENERATION_METADATA: str(generation)})


class CollectionOverviewOperator(CollectionOperator):
    """Bring the collection overview (one low-resolution mosaic of all frames) up to the index.

    Draws again only the blocks that changes since its last version touched,
    reading the frames there at their own overview levels, and publishes the
    result under a new key. Returns the overview's key and resolution, or
    None when the collection has no frame.
    """

    def __init__(self, **kwargs):
        super().__init__(**self.take_collection(kwargs))

    def execute(self, context):
        with self.postgis.connect() as connection:
            entry = tileindex.catalog_entry(connection, self.collection)
            summary = tileindex.summary(connection, self.collection)
            changed = tileindex.changed_areas(connection, self.collection, entry.overview_generation)
        if entry.overview_generation == entry.generation:
            self.log.info("the overview shows generation %d already", entry.generation)
            return self.described(entry.overview_key)
        key = self.draw(entry.overview_key, entry.generation, summary.bounds, changed) if summary.count else ""
        with self.postgis.begin() as connection:
            tileindex.set_overview(connection, self.collection, entry.generation, key)
        # The version before stays: MapServer reads it until the new mapfile reaches it.
        stale = [obj.key for obj in self.s3.list_objects(self.bucket_name, self.collection.overview_prefix)
                 if obj.key not in (key, entry.overview_key)]
        if stale:
            self.s3.delete_objects(self.bucket_name, stale)
        return self.described(key)

    @staticmethod
    def described(key: str) -> dict | None:
        from ls4_ops.layout import overview_zoom
        from ls4_ops.overview import resolution

        return {"key": key, "resolution": resolution(overview_zoom(key))} if key else None

    def draw(self, previous_key: str, generation: int, extent, changed) -> str:
        """Write the overview of the index at ``generation``; return its key."""
        import rasterio

        from ls4_ops import overview

        with scratch.workspace("overview") as directory, \
                self.s3.endpoint().rasterio_env(), ExitStack() as frames:
            opened = {}

            def frames_in(bounds):
                with self.postgis.connect() as connection:
                    keys = tileindex.cogs_within(connection, self.collection, bounds)
                for cog_key in keys:
                    if cog_key not in opened:
                        opened[cog_key] = frames.enter_context(
                            rasterio.open(vsis3_path(self.bucket_name, cog_key)))
                    yield opened[cog_key]

            previous = None
            if previous_key and self.s3.check_for_key(previous_key, self.bucket_name):
                previous = os.path.join(directory, "previous.tif")
                self.s3.get_conn().download_file(self.bucket_name, previous_key, previous)
            elif previous_key:
                self.log.warning("%s is gone from the bucket: the overview is drawn anew", previous_key)
            out = os.path.join(directory, "overview.tif")
            info = overview.update(previous, out, self.collection.band, extent, changed, frames_in,
                                   scratch=os.path.join(directory, "work.tif"))
            key = self.collection.overview_key(generation, info["zoom"])
            self.s3.upload(out, self.bucket_name, key, acl=self.public_acl, content_type="image/tiff")
        self.log.info("overview %s: %s", key, info)
        return key


class PublishMapfileOperator(CollectionOperator):
    """Build the mapfile with mappyfile and publish it to ``mapfiles/``.

    :param tile_index: what TileIndexOperator returned (its extent is the map's)
    :param overview: what CollectionOverviewOperator returned (None: no overview layer)
    """

    template_fields = ("tile_index", "overview")

    def __init__(self, *, tile_index, overview=None, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.tile_index = tile_index
        self.overview = overview

    def execute(self, context):
        if not self.tile_index["count"]:
            raise AirflowSkipException(f"{self.collection.name} has no indexed COG: there is nothing to serve")
        generation = self.tile_index["generation"]
        settings = self.settings
        overview = self.overview and mapfile.Overview(f"/vsicurl/{settings.public_link(self.overview['key'])}",
                                                      self.overview["resolution"])
        text = mapfile.render(mapfile.build(self.collection, list(self.tile_index["extent"]),
                                            wms_url=settings.wms_url, pg_service=settings.pg_service,
                                            generation=generation, overview=overview))
        self.s3.put_text(text, self.bucket_name, self.collection.mapfile_key, content_type="text/plain",
                         metadata={**mapfile.s3fs_metadata(settings.mapfile_uid, settings.mapfile_gid),
                                   tileindex.GENERATION_METADATA: str(generation),
                                   mapfile.FORMAT_METADATA: mapfile.FORMAT})
        url = mapfile.mapfile_url(self.collection, settings.wms_url)
        self.log.info("WMS of %s: %s&SERVICE=WMS&REQUEST=GetCapabilities", self.collection.name, url)
        return {"url": url, "generation": generation, "extent": self.tile_index["extent"]}


class WmsServedOperator(CollectionOperator):
    """Succeed once MapServer serves what the run published; fail with the reason if it does not in time.

    The mapfile reaches MapServer through the sync on its host: until then the
    WMS answers with the mapfile before (or with "Unable to access file" for a
    new collection). A run is green only when GetCapabilities comes from the
    new mapfile and a GetMap of the collection's extent is an image.

    :param published: what PublishMapfileOperator returned
    :param timeout: how long to wait, in seconds
    """

    template_fields = ("published",)

    def __init__(self, *, published, timeout: float = 120, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.published = published
        self.timeout = timeout

    def execute(self, context):
        from tenacity import Retrying, stop_after_delay, wait_fixed

        for attempt in Retrying(stop=stop_after_delay(self.timeout), wait=wait_fixed(2), reraise=True):
            with attempt:
                self.check()
        self.log.info("MapServer serves generation %d of %s", self.published["generation"], self.collection.name)

    def check(self) -> None:
        import urllib.error
        import urllib.parse
        import urllib.request

        def get(**params) -> tuple[str, bytes]:
            query = urllib.parse.urlencode({"SERVICE": "WMS", "VERSION": "1.3.0", **params})
            try:
                with urllib.request.urlopen(f"{self.published['url']}&{query}", timeout=30) as answer:
                    return answer.headers.get("Content-Type", ""), answer.read()
            except (urllib.error.URLError, OSError) as error:
                raise WmsNotServing(f"the WMS at {self.published['url']} does not answer: {error}") from error

        _, capabilities = get(REQUEST="GetCapabilities")
        try:
            current = mapfile.shows_generation(capabilities, self.published["generation"])
        except ValueError:  # not XML: MapServer's error text
            current = False
        if not current:
            raise WmsNotServing(f"the WMS does not serve index generation {self.published['generation']} yet "
                                f"(is the mapfile sync on the MapServer host running?): "
                                f"{capabilities[:300].decode(errors='replace')}")
        content_type, image = get(REQUEST="GetMap", LAYERS=self.collection.name, STYLES="", CRS=tileindex.INDEX_CRS,
                                  BBOX=",".join(map(str, self.published["extent"])), WIDTH=256, HEIGHT=256,
                                  FORMAT="image/png", TRANSPARENT="TRUE")
        if not content_type.startswith("image/png"):
            raise WmsNotServing(f"a GetMap of {self.collection.name} answers {content_type}: "
                                f"{image[:300].decode(errors='replace')}")


class WmsNotServing(RuntimeError):
    pass


class ReportRunOperator(CollectionOperator):
    """Say what the run did with the collection's uploads, tell uploaders about the frames
    processed without a scan or with an odd name, and fail the run (so operators see it)
    when it left any upload unprocessed, each with the reason.

    :param planned: what ``plan`` returned (the uploads it gave raster work)
    :param unprocessed: what ``plan`` left unprocessed (``Plan.unprocessed()``)
    """

    template_fields = ("planned", "unprocessed")

    def __init__(self, *, planned, unprocessed, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.planned = planned
        self.unprocessed = unprocessed

    def execute(self, context):
        from ls4_ops import failures

        planned, unprocessed = self.planned or [], self.unprocessed or {}
        with self.postgis.connect() as connection:
            indexed = tileindex.indexed(connection, self.collection)
            # A version left alone failed before: its recorded failure is its reason.
            reasons = failures.reasons(connection, {item["key"]: item["etag"] for item in planned}
                                       | dict.fromkeys(unprocessed.get("known_bad", [])))
        report = plan.report_run(planned, indexed, unprocessed, reasons)
        self.notify(plan.processed_notices(self.collection, report.processed))
        if not report.clean:
            raise AirflowFailException(report.text) from UploadsUnprocessed(report.text)
        self.log.info("%s", report.text)
        return report.text

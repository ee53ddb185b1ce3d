"""Collection-level tasks: plan the run, bring the tile index up to date, publish
the mapfile, and report what the run did."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor

from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ls4_ops import mapfile, plan, tileindex
from ls4_ops.operators.base import CollectionOperator
from ls4_ops.operators.notifications import last_success_start
from ls4_ops.s3env import vsis3_path

INDEX_WORK_XCOM = "index"


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
        super().__init__(**kwargs)
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
        for notice in run.notices:
            self.notify(notice)
        for key in run.make_public:
            self.s3.set_public_read(self.bucket_name, key)
        self.log.info("%d to process, %d up to date, %d problems; index: %d to add, %d links, %d to remove, "
                      "publish %s", len(run.todo), len(run.up_to_date), len(run.problems), len(run.index.add),
                      len(run.index.scan_links), len(run.index.remove), run.index.publish)
        context["ti"].xcom_push(key=INDEX_WORK_XCOM, value=run.index.to_dict())
        if not run.has_work:
            self.log.info("nothing changed since the last run: nothing to do")
            self.skip(context["ti"], self.get_direct_relatives(upstream=False))
        return run.todo

    def collection_state(self) -> plan.CollectionState:
        with self.postgis.connect() as connection:
            indexed = tileindex.indexed(connection, self.collection)
            generation = tileindex.generation(connection, self.collection)
        return plan.CollectionState(
            georef=self.s3.list_objects(self.bucket_name, self.collection.prefix("georef")),
            scanned=self.scans(),
            cogs=self.cogs(),
            indexed=indexed,
            generation=generation,
            published_index=self.s3.published_generation(self.bucket_name, self.collection.tile_index_zip_key),
            published_mapfile=self.s3.published_generation(self.bucket_name, self.collection.mapfile_key),
        )


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
        super().__init__(**kwargs)
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
        for item in work.remove:
            self.notify(plan.removal_notice(self.collection, item))
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
            self.notify(plan.Notice("COG not indexed", f"{item['cog_key']} cannot be read ({error}); it stays "
                                    "out of the index: reprocess the upload (a run with its key)", item["key"]))
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
                with tempfile.TemporaryDirectory(prefix="ls4-index-") as directory:
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
        self.s3.upload(path, self.bucket_name, key, acl="public-read",
                       metadata={tileindex.GENERATION_METADATA: str(generation)})


class PublishMapfileOperator(CollectionOperator):
    """Build the mapfile with mappyfile and publish it to ``mapfiles/``.

    :param tile_index: what TileIndexOperator returned (its extent is the map's)
    """

    template_fields = ("tile_index",)

    def __init__(self, *, tile_index, **kwargs):
        super().__init__(**kwargs)
        self.tile_index = tile_index

    def execute(self, context):
        if not self.tile_index["count"]:
            raise AirflowSkipException(f"{self.collection.name} has no indexed COG: there is nothing to serve")
        generation = str(self.tile_index["generation"])
        settings = self.settings
        text = mapfile.render(mapfile.build(self.collection, list(self.tile_index["extent"]), wms_url=settings.wms_url,
                                            pg_service=settings.pg_service))
        with tempfile.NamedTemporaryFile("w", suffix=".map") as handle:
            handle.write(text)
            handle.flush()
            self.s3.upload(handle.name, self.bucket_name, self.collection.mapfile_key, content_type="text/plain",
                           metadata={**mapfile.s3fs_metadata(settings.mapfile_uid, settings.mapfile_gid),
                                     tileindex.GENERATION_METADATA: generation})
        url = mapfile.mapfile_url(self.collection, settings.wms_url)
        self.log.info("WMS of %s: %s&SERVICE=WMS&REQUEST=GetCapabilities", self.collection.name, url)
        return url


class ReportRunOperator(CollectionOperator):
    """Fail the run (so operators see it) when a planned upload has no current COG in the index.

    :param planned: what ``plan`` returned
    """

    template_fields = ("planned",)

    def __init__(self, *, planned, **kwargs):
        super().__init__(**kwargs)
        self.planned = planned

    def execute(self, context):
        planned = self.planned or []
        with self.postgis.connect() as connection:
            indexed = tileindex.indexed(connection, self.collection)
        missing = [item["key"] for item in planned
                   if item["cog_key"] not in indexed or indexed[item["cog_key"]].source_etag != item["etag"]]
        if missing:
            raise AirflowFailException(
                f"{len(missing)} of {len(planned)} uploads were not processed: {', '.join(missing)}. "
                "Their task logs and notifications say why.")
        self.log.info("%d uploads processed", len(planned))

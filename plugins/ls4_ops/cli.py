"""The ``ls4`` command: what operators ask of ls4 from a terminal.

    ls4 status [COLLECTION]                    frames, pending, failed, last run, WMS URL
    ls4 where KEY                              where an upload is in the pipeline, and why
    ls4 reprocess COLLECTION [KEY...|--force]  a manual run through Airflow's REST API
    ls4 failures [--since 7d]                  uploads that failed, with the reason
    ls4 maintenance [--dry-run]                the daily maintenance, now

It reads the same settings as the rest of ls4 (``LS4_*``: the bucket and S3
endpoint, PostGIS as ``LS4_PG_*``, the WMS; ``source include/stack/env.sh``
gives the local stack's) and talks to S3, PostGIS, MapServer and Airflow's
API over the network: no Airflow import, no file of the repository. A
service it cannot reach is named in one line on stderr, with how to start
it, and the exit status is 3.

A command is a ``run_NAME(args, services) -> Output`` function, whose
docstring is its ``--help``, and an ``add_NAME`` in ``COMMANDS`` that gives
it its arguments. The decisions they print are pure functions (here and in
``upload_status``); the I/O is in ``Services`` and the ``gather_*`` functions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property

from ls4_ops import failures, ledger, maintenance, registry, tileindex
from ls4_ops.airflow_api import AirflowApi, AirflowApiError, AirflowUnreachable, DagRun
from ls4_ops.layout import BAND_PREFIXES, Collection, LayoutError, UploadKey, is_output_key, parse_key, \
    validate_identifier
from ls4_ops.mapfile import FORMAT, FORMAT_METADATA, mapfile_url
from ls4_ops.plan import CogSource, S3Object
from ls4_ops.s3env import S3Endpoint
from ls4_ops.settings import Settings, postgis_url
from ls4_ops.upload_status import Stage, UploadFacts, collection_counts, stopped_at, utc, where

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
CONNECT_TIMEOUT_SECONDS = 10


class Unreachable(Exception):
    """A service the command needs does not answer."""

    def __init__(self, service: str, address: str, stack_service: str, error: object):
        self.service, self.address, self.stack_service = service, address, stack_service
        super().__init__(f"cannot reach {service} at {address} ({_first_line(error)}); start it with `make run` "
                         f"or `include/stack/stack.sh start {stack_service}` (local stack)")


class CommandError(Exception):
    """The command cannot do what was asked; the message says why, in one line."""


@dataclass
class Output:
    data: object  # what --json prints
    text: str  # what a person reads
    exit_code: int = 0


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# --- pure helpers ----------------------------------------------------------------------------

_DURATION = re.compile(r"(?P<count>[0-9]+)\s*(?P<unit>m|min|h|d|w)")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a duration back from ``now`` (``30m``, ``12h``, ``7d``, ``2w``) or an ISO date or
    time (``2026-12-01``, ``2026-12-01T08:00``; UTC unless it says otherwise)."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match["unit"]]: int(match["count"])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 12h, 7d, 2w) nor a date (2026-12-01, 2026-12-01T08:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers in aligned columns; numbers to the right."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.rjust(width) if right else value.ljust(width)
                         for value, width, right in zip(values, widths, numeric)).rstrip()
    return "\n".join([line(headers), *(line(row) for row in cells)])


def run_conf(keys: Sequence[str], force: bool) -> dict:
    """The ``dag_run.conf`` of a manual run of a collection's DAG (README, "Re-run by hand"):
    the uploads named in ``keys`` (retried even when current or failed before), the whole
    collection (``force``), or, with neither, what changed, as a scheduled run does."""
    if keys and force:
        raise CommandError("give KEYs (reprocess those uploads) or --force (the whole collection), not both")
    if keys:
        return {"keys": list(keys)}
    return {"force": True} if force else {}


def last_run_text(run: DagRun | None, has_dag: bool) -> str:
    if not has_dag:
        return "no DAG yet"
    return f"{run.state} {utc(run.last_change)}" if run else "no run yet"


def capabilities_layers(document: bytes) -> frozenset[str] | None:
    """Layer names of a WMS GetCapabilities document; None when it is not one (an exception report)."""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return None
    if not root.tag.endswith("WMS_Capabilities"):
        return None
    return frozenset(name.text for name in root.iterfind(".//{*}Layer/{*}Name") if name.text)


def key_of(argument: str, bucket: str) -> str:
    """A key given as itself or as its ``s3://bucket/`` URL."""
    return argument.removeprefix(f"s3://{bucket}/")


# --- I/O at the edges ---------------------------------------------------------------------------

class Services:
    """The connections a command needs, opened when first used; a service that does not answer
    raises :class:`Unreachable`."""

    def __init__(self):
        self.settings = Settings.from_env()

    @cached_property
    def s3_endpoint(self) -> S3Endpoint:
        return S3Endpoint.from_env()

    @cached_property
    def s3(self):
        from botocore.config import Config

        # Fail in seconds, not after botocore's default retries, when the endpoint is down.
        return self.s3_endpoint.boto3_client(config=Config(retries={"max_attempts": 2},
                                                           connect_timeout=CONNECT_TIMEOUT_SECONDS))

    @contextmanager
    def reaching_s3(self) -> Iterator[None]:
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, NoCredentialsError

        address = self.s3_endpoint.endpoint_url or "AWS S3"
        try:
            yield
        except BotoConnectionError as error:
            raise Unreachable("S3", address, "s3", error) from None
        except NoCredentialsError:
            raise CommandError(f"no S3 credentials for {address}: set LS4_S3_ACCESS_KEY and LS4_S3_SECRET_KEY "
                               "(`source include/stack/env.sh` for the local stack)") from None
        except ClientError as error:
            raise CommandError(f"S3 at {address} refused: {_first_line(error)}") from None

    def list_objects(self, prefix: str) -> list[S3Object]:
        with self.reaching_s3():
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket, Prefix=prefix)
            return [S3Object.from_listing(entry) for page in pages for entry in page.get("Contents", [])]

    def head(self, key: str) -> dict | None:
        """The object's HEAD; None when there is no such object."""
        from botocore.exceptions import ClientError

        with self.reaching_s3():
            try:
                return self.s3.head_object(Bucket=self.settings.bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    @cached_property
    def postgis(self):
        from sqlalchemy import create_engine

        try:
            url = postgis_url()
        except KeyError as missing:
            raise CommandError(f"{missing.args[0]} not set: PostGIS is described by LS4_PG_* "
                               "(`source include/stack/env.sh` for the local stack)") from None
        return create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})

    @contextmanager
    def database(self):
        from sqlalchemy.exc import OperationalError

        try:
            connection = self.postgis.connect()
        except OperationalError as error:
            url = self.postgis.url
            raise Unreachable("PostGIS", f"{url.host}:{url.port}/{url.database}", "postgis",
                              error.orig or error) from None
        with connection:
            yield connection

    @cached_property
    def airflow(self) -> AirflowApi:
        return AirflowApi.from_env()

    @contextmanager
    def reaching_airflow(self) -> Iterator[AirflowApi]:
        try:
            yield self.airflow
        except AirflowUnreachable as error:
            raise Unreachable("the Airflow API", error.url, "airflow", error.reason) from None

    def wms_layers(self, collection: Collection) -> frozenset[str] | None:
        url = f"{mapfile_url(collection, self.settings.wms_url)}&SERVICE=WMS&REQUEST=GetCapabilities"
        try:
            with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_SECONDS) as response:
                return capabilities_layers(response.read())
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise Unreachable("MapServer (WMS)", self.settings.wms_url, "mapserver",
                              getattr(error, "reason", error)) from None

    def close(self) -> None:
        if "postgis" in self.__dict__:
            self.postgis.dispose()


def gather_georef_uploads(services: Services) -> dict[Collection, list[S3Object]]:
    """Every collection with georef uploads, and those uploads (one listing of each band prefix)."""
    objects = {obj.key: obj for prefix in BAND_PREFIXES for obj in services.list_objects(prefix)}
    return {collection: [objects[key] for key in keys]
            for collection, keys in registry.survey(objects).georef.items()}


def gather_upload_facts(services: Services, upload: UploadKey, head: dict | None) -> UploadFacts:
    collection = upload.collection
    obj = None if head is None else S3Object(upload.key, head["ETag"].strip('"'), head["ContentLength"],
                                             head.get("LastModified"))
    # Uploads that may make the same COG (the same name, .tif or .TIF), and a few others it is
    # told apart from by where().
    same_cog = services.list_objects(f"{collection.prefix('georef')}{upload.stem}.")
    with services.database() as connection:
        failure = next(iter(failures.recorded(connection, key=upload.key)), None)
        row = tileindex.indexed(connection, collection).get(upload.cog_key)
        generation = tileindex.generation(connection, collection)
    cog_head = services.head(upload.cog_key)
    mapfile_head = services.head(collection.mapfile_key)
    mapfile_generation = None if mapfile_head is None else tileindex.generation_shown(
        mapfile_head.get("Metadata", {}), {FORMAT_METADATA: FORMAT})
    return UploadFacts(
        upload=upload, bucket=services.settings.bucket, head=obj, same_cog=same_cog, failure=failure,
        cog=None if cog_head is None else CogSource.from_metadata(cog_head.get("Metadata", {})),
        row=row, table_generation=generation, mapfile_generation=mapfile_generation,
        wms_layers=None if mapfile_head is None else services.wms_layers(collection))


# --- commands -------------------------------------------------------------------------------------

def run_status(args, services: Services) -> Output:
    """Frames, pending and failed uploads, last run and WMS of each collection.

    Per collection: FRAMES (rows of its tile index), PENDING (georef uploads whose current
    version is not in the index yet), FAILED (uploads whose current version failed; runs
    leave them alone until a new version comes), its DAG's LAST RUN (Airflow API) and the
    WMS URL to put in a GIS. Needs S3, PostGIS and the Airflow API.
    """
    uploads = gather_georef_uploads(services)
    if args.collection:
        uploads = {c: objs for c, objs in uploads.items() if c.name == args.collection}
        if not uploads:
            raise CommandError(f"no collection {args.collection} in s3://{services.settings.bucket}: no georef "
                               "upload under bw/ or nc/ makes it (`ls4 status` lists them all)")
    with services.database() as connection:
        counts = {c: collection_counts(c, objs, tileindex.indexed(connection, c),
                                       failures.failed(connection, c), services.settings.max_upload_bytes)
                  for c, objs in uploads.items()}
    runs: dict[Collection, tuple[bool, DagRun | None]] = {}
    with services.reaching_airflow() as api:
        for collection in sorted(uploads):
            try:
                runs[collection] = (True, api.last_run(collection.dag_id))
            except AirflowApiError as error:
                if error.status != 404:
                    raise CommandError(f"Airflow API: {error}") from None
                runs[collection] = (False, None)
    data, rows = [], []
    for collection in sorted(uploads):
        has_dag, run = runs[collection]
        counts_of = counts[collection]
        wms = mapfile_url(collection, services.settings.wms_url)
        data.append({"collection": collection.name, "dag_id": collection.dag_id, **asdict(counts_of),
                     "last_run": None if run is None else {"state": run.state, "run_id": run.run_id,
                                                           "time": run.last_change.isoformat()},
                     "has_dag": has_dag, "wms_url": wms})
        rows.append([collection.name, counts_of.frames, counts_of.pending, counts_of.failed,
                     last_run_text(run, has_dag), wms])
    text = table(["COLLECTION", "FRAMES", "PENDING", "FAILED", "LAST RUN", "WMS"], rows) if rows else \
        f"no collection has georef uploads in s3://{services.settings.bucket}"
    return Output(data, text)


def where_text(key: str, stages: list[Stage], note: str = "", history: Sequence[ledger.StageRecord] = ()) -> str:
    stop = stopped_at(stages)
    verdict = ("served by the WMS" if stop is None else f"stops at: {stop.name}" if stop.done is False
               else "not an upload ls4 processes")
    marks = {True: "yes", False: "NO", None: "-"}
    lines = [note] if note else []
    lines += [f"{key}: {verdict}", table(["STAGE", "", "WHY"], [[s.name, marks[s.done], s.reason] for s in stages])]
    if history:
        lines += ["", "what ls4 did with it (the run ledger):", table(
            ["STARTED", "STAGE", "TRY", "SECONDS", "OUTCOME", "ETAG", "REASON"],
            [[utc(r.started), r.stage, r.try_number, f"{r.seconds:.1f}", r.outcome, r.etag, r.reason]
             for r in history])]
    return "\n".join(lines)


def run_where(args, services: Services) -> Output:
    """Where an upload is in the pipeline, and why.

    Follows one upload: uploaded (S3 HEAD, ETag) -> not failed (recorded failures) ->
    cog (made from this version) -> indexed (PostGIS row) -> served (published mapfile,
    WMS capabilities), saying at each stage why, in plain words; then every raster stage
    ls4 ran on it (the run ledger: when, which version, how long, the outcome and why).
    Needs S3, PostGIS and MapServer.
    """
    key, note = key_of(args.key, services.settings.bucket), ""
    try:
        upload = parse_key(key)
    except LayoutError as error:
        if is_output_key(key):
            return _where_output(key, [Stage("uploaded", None, "written by ls4 under cog/ (a tile index file or a "
                                                                "collection overview), not an upload")])
        stages = [Stage("uploaded", False, f"{error.reason}: ls4 does not process it; move it into the layout "
                                           "{band}/{county}/{agency}_{yyyy}/{type}/georef/{file}")]
        return _where_output(key, stages)
    if upload.stage == "cog":
        head = services.head(key)
        source = CogSource.from_metadata(head.get("Metadata", {})) if head else None
        if source is None or not source.made_by_ls4:
            what = "there is no such COG" if head is None else "ls4 did not write it (no source in its metadata)"
            return _where_output(key, [Stage("uploaded", False, f"{key} is under cog/, where ls4 writes: {what}")])
        note, key, upload = f"{key} is the COG of {source.key}:", source.key, parse_key(source.key)
    if upload.stage == "scanned":
        stages = [Stage("uploaded", None, "an original scan: public (see README, Public access), linked from its frame's "
                                          f"index row (dl_orig); frames are processed from {upload.collection.prefix('georef')}")]
        return _where_output(key, stages)
    stages = where(gather_upload_facts(services, upload, services.head(upload.key)), services.settings.wms_url,
                   services.settings.max_upload_bytes)
    with services.database() as connection:
        history = ledger.history(connection, upload.key)
    return _where_output(key, stages, note, history)


def _where_output(key: str, stages: list[Stage], note: str = "", history: Sequence[ledger.StageRecord] = ()) -> Output:
    stop = stopped_at(stages)
    data = {"key": key, "stopped_at": stop.name if stop else None, "stages": [asdict(stage) for stage in stages],
            "history": [asdict(record) for record in history]}
    return Output(data, where_text(key, stages, note, history))


def run_reprocess(args, services: Services) -> Output:
    """Start a run of a collection's DAG through Airflow's REST API.

    Queues a manual run of the collection's DAG:
      ls4 reprocess C KEY...   those uploads, even when current or failed before
      ls4 reprocess C --force  every upload of the collection
      ls4 reprocess C          what changed (as a scheduled run)
    A KEY is the georef key, its s3:// URL or the file name alone; a key the run cannot
    process fails its plan task, naming each. The API: LS4_AIRFLOW_URL (default
    http://127.0.0.1:$LS4_AIRFLOW_PORT), as LS4_AIRFLOW_USER / LS4_AIRFLOW_PASSWORD when
    set (else the simple auth manager's all-admins token).
    """
    conf = run_conf(args.keys, args.force)
    try:
        validate_identifier(args.collection)
    except ValueError:
        raise CommandError(f"{args.collection!r} is not a collection name ({{county}}_{{agency}}_{{yyyy}}_{{type}}, "
                           "as `ls4 status` lists them)") from None
    with services.database() as connection:
        registered = registry.fetch(connection)
    # Before PostGIS had the registry, the local file was it.
    if registered is None:
        registered = registry.load(services.settings.registry_path)
    collection = registered.get(args.collection)
    if collection is None:
        raise CommandError(f"{args.collection} is not in the registry of collections ({registry.TABLE}), "
                           "so it has no DAG: discovery registers a collection once it has a georef upload "
                           "(`ls4 status` lists them)")
    with services.reaching_airflow() as api:
        try:
            paused = api.is_paused(collection.dag_id)
            run = api.trigger(collection.dag_id, conf)
        except AirflowApiError as error:
            raise CommandError(f"Airflow did not start {collection.dag_id}: {error.detail}") from None
    url = services.airflow.run_url(run)
    what = (f"{len(args.keys)} upload(s): {', '.join(args.keys)}" if args.keys else
            "the whole collection" if args.force else "what changed")
    lines = [f"triggered {run.dag_id} run {run.run_id} ({run.state}) to reprocess {what}", f"follow it at {url}"]
    if paused:
        lines.append(f"{run.dag_id} is paused: the run waits until it is unpaused")
    data = {"dag_id": run.dag_id, "run_id": run.run_id, "state": run.state, "conf": run.conf, "url": url,
            "paused": paused}
    return Output(data, "\n".join(lines))


def run_failures(args, services: Services) -> Output:
    """Uploads that failed, with the reason, newest first.

    Uploads whose processing failed for a reason inside the file (unreadable, not
    georeferenced, 16-bit, ...): runs leave such a version alone until a new one is
    uploaded (or `ls4 reprocess C KEY`). Needs PostGIS.
    """
    with services.database() as connection:
        found = failures.recorded(connection, since=args.since)
    data = [{**asdict(failure), "failed": failure.failed.isoformat()} for failure in found]
    since = f" since {utc(args.since)}" if args.since else ""
    text = table(["FAILED AT", "KEY", "REASON"], [[utc(f.failed), f.key, f.reason] for f in found]) if found else \
        f"no failed upload recorded{since}"
    return Output(data, text)


def run_maintenance(args, services: Services) -> Output:
    """Check mapfiles against tables and the bucket against its layout, as the daily DAG does.

    Orphan mapfiles and preview pages go to quarantine/, orphan tables to the
    ls4_quarantine schema (removed for good only with LS4_MAINTENANCE_DELETE=true),
    intermediates under ls4-work/ that no run can still need are deleted; the rest
    (objects outside the layout, COGs whose upload is gone, scans that are not
    public) is reported. Nothing a user uploaded is moved or deleted. Notifies no
    one (the ls4_maintenance DAG does). Exit status 1 when an action failed. Needs
    S3 and PostGIS.
    """
    with services.database(), services.reaching_s3():
        report = maintenance.run(services.s3, services.postgis, services.settings, dry_run=args.dry_run)
    return Output(report.to_dict(), maintenance.summary(report), EXIT_FAILED if report.failed else 0)


# --- the parser -------------------------------------------------------------------------------------

def add_command(commands, run: Callable[[argparse.Namespace, Services], Output],
                common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The subcommand ``run_NAME`` carries out, its help from that function's docstring;
    ``common`` gives it --json."""
    summary, _, details = run.__doc__.partition("\n")
    parser = commands.add_parser(run.__name__.removeprefix("run_"), parents=[common], help=summary.rstrip("."),
                                 description=f"{summary}\n\n{textwrap.dedent(details).strip()}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    return parser


def add_status(commands, common) -> None:
    add_command(commands, run_status, common).add_argument(
        "collection", nargs="?", metavar="COLLECTION",
        help="one collection, e.g. sample_tops_1975_frames (default: every collection)")


def add_where(commands, common) -> None:
    add_command(commands, run_where, common).add_argument(
        "key", metavar="KEY", help="a georef key or its s3://bucket/ URL (a COG's key follows the upload it was "
                                   "made from)")


def add_reprocess(commands, common) -> None:
    parser = add_command(commands, run_reprocess, common)
    parser.add_argument("collection", metavar="COLLECTION", help="e.g. sample_tops_1975_frames")
    parser.add_argument("keys", nargs="*", metavar="KEY", help="uploads to reprocess (default: what changed)")
    parser.add_argument("--force", action="store_true", help="reprocess the whole collection")


def add_failures(commands, common) -> None:
    add_command(commands, run_failures, common).add_argument(
        "--since", type=lambda text: parse_since(text, datetime.now(timezone.utc)), metavar="DURATION_OR_DATE",
        help="only failures since then: 30m, 12h, 7d, 2w, or 2026-12-01[T08:00] (UTC)")


def add_maintenance(commands, common) -> None:
    add_command(commands, run_maintenance, common).add_argument(
        "--dry-run", action="store_true", help="decide and report only: change nothing")


COMMANDS = (add_status, add_where, add_reprocess, add_failures, add_maintenance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ls4", description="Operate ls4: what happened to uploads, and reprocessing.",
        epilog="Settings: the LS4_* environment (`source include/stack/env.sh` for the local stack). Exit status: "
               "0 done, 1 the command could not do it, 2 wrong usage, 3 a service cannot be reached.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    services = Services()
    try:
        output = args.run(args, services)
    except Unreachable as error:
        print(f"ls4 {args.command}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except CommandError as error:
        print(f"ls4 {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        services.close()
    print(json.dumps(output.data, indent=1, default=str) if args.json else output.text)
    return output.exit_code


if __name__ == "__main__":
    sys.exit(main())

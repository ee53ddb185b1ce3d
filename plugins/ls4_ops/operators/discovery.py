"""Keeping the DAG registry current and starting the collections' runs: from the
bucket's upload events (the router) or from a listing of the bucket (discovery)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ls4_ops import access, events, registry
from ls4_ops.layout import BAND_PREFIXES, Collection
from ls4_ops.operators.assets import COLLECTION_UPLOADS, collection_asset
from ls4_ops.operators.base import Ls4Operator
from ls4_ops.operators.notifications import last_success_start
from ls4_ops.plan import Notice

# The keys an asset event names, for the run's log (the run itself looks at the whole collection).
KEYS_IN_EVENT = 50


class _RegistryOperator(Ls4Operator):
    """Applies a :class:`registry.Discovery`: notices, registry, public scans, and an
    event on the asset of each collection whose uploads changed (its DAG then runs)."""

    template_fields = ("registry_path",)

    def __init__(self, *, registry_path: str, bucket_name: str | None = None, aws_conn_id: str | None = None,
                 postgis_conn_id: str | None = None, **kwargs):
        kwargs.setdefault("outlets", [COLLECTION_UPLOADS])
        super().__init__(**kwargs)
        self.use_bucket(bucket_name, aws_conn_id)
        self.postgis_conn_id = postgis_conn_id or ""
        self.registry_path = registry_path

    def decide_and_register(self, decide: Callable[[Mapping[str, Collection]], registry.Discovery], context) -> dict:
        """Decide on the registry in PostGIS, register what is new, and apply the rest."""
        with self.postgis.begin() as connection:
            found, registered = registry.update(connection, self.registry_path, decide)
        # This host's DAG processor sees a new collection at its next parse, not once its copy is old.
        registry.save(self.registry_path, registered.values())
        self.notify(found.notices)
        self.make_public(found.make_public)
        for name, keys in sorted(found.changed.items()):
            context["outlet_events"][COLLECTION_UPLOADS].add(
                collection_asset(registered[name], self.bucket_name),
                extra={"changed": len(keys), "keys": keys[:KEYS_IN_EVENT]})
        self.log.info("new collections: %s; runs started for: %s; %d scans of collections without "
                      "georef uploads made public-read", ", ".join(found.new) or "none",
                      ", ".join(sorted(found.changed)) or "none", len(found.make_public))
        return {"new": found.new, "changed": sorted(found.changed), "public_scans": len(found.make_public)}


class RouteUploadsOperator(_RegistryOperator):
    """Start the runs of the collections whose uploads the bucket's events report.

    Reads the changes from the asset events that triggered this run (from the
    upload queue's watcher), registers new collections (their DAG appears at
    the next DAG-folder parse and runs once when it does), makes scans of
    collections without a DAG public-read, reports uploads outside the
    layout, and adds an event on each changed collection's asset.

    :param registry_path: this host's copy of the registry, which its DAG factory reads
    :param postgis_conn_id: Airflow connection of the database that holds the registry
    """

    def execute(self, context):
        changes = events.BucketChanges()
        for asset_events in context["triggering_asset_events"].values():
            for event in asset_events:
                changes.merge((event.extra or {}).get("payload", {}))
        georef = registry.survey(changes.created).collections
        return self.decide_and_register(
            lambda known: registry.decide(known, georef, changes.created, changes.removed, changes.etags), context)


class DiscoverCollectionsOperator(_RegistryOperator):
    """Find what changed in the bucket since the last successful run from one listing
    of ``bw/`` and ``nc/``, and act on it as the router does on events.

    Changed: an upload or scan newer than the last successful run, or a COG
    whose upload is gone. Where the bucket sends no events this runs every
    few minutes and starts those collections' runs in place of the events.
    Where it sends them, it runs once a day for new collections an event
    missed, and starts no run (each collection reconciles daily itself).
    The first run starts none either: every collection's DAG runs when it
    first appears.

    :param registry_path: this host's copy of the registry, which its DAG factory reads
    :param postgis_conn_id: Airflow connection of the database that holds the registry
    :param start_runs: start the runs of collections whose uploads changed
    """

    template_fields = ("registry_path", "start_runs")

    def __init__(self, *, start_runs: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.start_runs = start_runs

    def execute(self, context):
        if not self.settings.uses_acls:
            self.check_bucket_policy()
        objects = [obj for prefix in BAND_PREFIXES for obj in self.s3.list_objects(self.bucket_name, prefix)]
        since = last_success_start(context)
        return self.decide_and_register(
            lambda known: registry.discover(objects, known, since, self.start_runs), context)

    def check_bucket_policy(self) -> None:
        """The bucket policy must make ls4's public objects public: write its statement where
        ls4 may (``LS4_APPLY_BUCKET_POLICY``), tell operators otherwise."""
        from botocore.exceptions import ClientError

        where = f"s3://{self.bucket_name}"
        try:
            policy = self.s3.bucket_policy(self.bucket_name)
        except ClientError as error:  # no s3:GetBucketPolicy: discovery goes on, operators are told
            self.notify([Notice("bucket policy", access.unreadable_policy(self.bucket_name, error), where,
                                access.error_code(error))])
            return
        check = access.check_policy(policy, self.bucket_name, apply=self.settings.apply_bucket_policy)
        problem = check.problem
        if check.put:
            try:
                self.s3.put_bucket_policy(self.bucket_name, check.put)
                self.log.info("added the public-read statement %s to the policy of %s", access.STATEMENT_ID,
                              self.bucket_name)
            except ClientError as error:
                problem = access.unwritable_policy(self.bucket_name, error)
        if problem:
            self.notify([Notice("bucket policy", problem, where, check.version)])

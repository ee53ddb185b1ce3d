"""Finding collections in the bucket and keeping the DAG registry current."""

from __future__ import annotations

from ls4_ops import registry
from ls4_ops.layout import BAND_PREFIXES, is_output_key
from ls4_ops.operators.base import Ls4Operator
from ls4_ops.operators.notifications import new_since_last_success, send


class DiscoverCollectionsOperator(Ls4Operator):
    """Register every collection with georef uploads; report uploads outside the
    layout and collections whose name another folder already has.

    The registry is what the DAG factory reads at parse time, so a new
    collection gets its DAG at the next DAG-folder parse. Scans of collections
    with no georef upload are made public-read here: no collection DAG plans
    a run for them (it does so for its own scans once a georef upload exists).
    """

    template_fields = ("registry_path",)

    def __init__(self, *, registry_path: str, bucket_name: str | None = None, aws_conn_id: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.use_bucket(bucket_name, aws_conn_id)
        self.registry_path = registry_path

    def execute(self, context):
        objects = [obj for prefix in BAND_PREFIXES for obj in self.s3.list_objects(self.bucket_name, prefix)]
        bucket = registry.survey(obj.key for obj in objects)
        found = bucket.collections
        by_key = {obj.key: obj for obj in objects}
        source = f"{self.dag_id}.{self.task_id}"
        for problem in bucket.problems:
            if not is_output_key(problem.key) and new_since_last_success(by_key.get(problem.key), context):
                send("upload outside the bucket layout", problem.reason + ": move it to the right folder",
                     key=problem.key, source=source)
        known = registry.load(self.registry_path)
        registered, clashes = registry.register(known, found)
        new = sorted(set(registered) - set(known))
        if new:
            registry.save(self.registry_path, registered.values())
        for clash in clashes:
            for key in bucket.georef[clash.collection]:
                if new_since_last_success(by_key[key], context):
                    send("collection not registered", clash.reason, key=key, source=source)
        self.log.info("%d collections, new: %s", len(found), ", ".join(new) or "none")
        # Older scans were made public-read by the previous successful run.
        scans = [key for key in bucket.scans_without_georef() if new_since_last_success(by_key[key], context)]
        for key in scans:
            self.s3.set_public_read(self.bucket_name, key)
        self.log.info("%d new scans of collections without georef uploads made public-read", len(scans))
        return {"collections": sorted(c.name for c in found), "new": new, "public_scans": len(scans)}

"""Finding collections in the bucket and keeping the DAG registry current."""

from __future__ import annotations

from ls4_ops import registry
from ls4_ops.layout import BAND_PREFIXES
from ls4_ops.operators.base import Ls4Operator
from ls4_ops.operators.notifications import last_success_start, send


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
        found = registry.discover(objects, registry.load(self.registry_path), last_success_start(context))
        for notice in found.notices:
            send(notice.subject, notice.reason, key=notice.key, source=f"{self.dag_id}.{self.task_id}")
        if found.registry is not None:
            registry.save(self.registry_path, found.registry.values())
        self.log.info("%d collections, new: %s", len(found.collections), ", ".join(found.new) or "none")
        # Older scans were made public-read by the previous successful run.
        for key in found.make_public:
            self.s3.set_public_read(self.bucket_name, key)
        self.log.info("%d new scans of collections without georef uploads made public-read",
                      len(found.make_public))
        return {"collections": sorted(c.name for c in found.collections), "new": found.new,
                "public_scans": len(found.make_public)}

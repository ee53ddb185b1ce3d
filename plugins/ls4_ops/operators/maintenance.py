"""The daily maintenance task: mapfiles against tables, and the bucket's hygiene."""

from __future__ import annotations

import dataclasses

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from ls4_ops import maintenance
from ls4_ops.operators.base import Ls4Operator
from ls4_ops.plan import Notice


class MaintenanceOperator(Ls4Operator):
    """Check every mapfile against its table and every table against its mapfile, and the
    whole bucket against its layout; take ls4's own orphans out of service and report the rest.

    Orphan mapfiles, preview pages and other objects under ``mapfiles/`` are moved
    to ``quarantine/{run}/``, orphan tables into the ``ls4_quarantine`` schema
    (removed for good only with ``LS4_MAINTENANCE_DELETE=true``), and
    intermediates under ``ls4-work/`` that no run can still need are deleted.
    Nothing a user uploaded is moved or deleted: objects outside the layout,
    COGs whose upload is gone and scans that are not public are reported. Each
    finding an operator must act on is notified; the summary goes to the log,
    and the task returns it as a dict (``maintenance.Report.to_dict``). The task
    fails, after doing everything else, when an action failed.

    :param dry_run: decide and report only: change nothing, notify no one (true/false)
    :param bucket_name: the ls4 bucket
    :param aws_conn_id: Airflow connection of the bucket
    :param postgis_conn_id: Airflow connection of the tile-index database
    """

    template_fields = ("dry_run",)

    def __init__(self, *, dry_run: bool | str = False, bucket_name: str | None = None,
                 aws_conn_id: str | None = None, postgis_conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.use_bucket(bucket_name, aws_conn_id)
        self.postgis_conn_id = postgis_conn_id or ""
        self.dry_run = dry_run

    def execute(self, context):
        dry_run = self.dry_run
        if isinstance(dry_run, str) and dry_run.strip().lower() in ("true", "false"):
            dry_run = dry_run.strip().lower() == "true"
        if not isinstance(dry_run, bool):
            raise AirflowFailException(f"dry_run must be true or false, not {self.dry_run!r}")
        settings = dataclasses.replace(self.settings, bucket=self.bucket_name)
        report = maintenance.run(self.s3.get_conn(), self.postgis, settings, dry_run=dry_run)
        self.log.info("%s", maintenance.summary(report))
        if not dry_run:
            self.notify(Notice(finding.kind, finding.reason, finding.key, finding.etag, finding.collection)
                        for finding in report.notices())
        if report.failed:
            raise AirflowException(f"{len(report.failed)} maintenance actions failed: " + "; ".join(
                f"{key}: {error}" for key, error in sorted(report.failed.items())))
        return report.to_dict()

"""Which objects a run reports: those changed since the previous successful run began."""

from datetime import datetime, timezone

import pytest

from ls4_ops.operators.notifications import last_success_start
from ls4_ops.plan import S3Object

RUN_START = datetime(2026, 5, 1, 12, 0, 30, 600_000, tzinfo=timezone.utc)


def listed(second: int) -> S3Object:
    """As S3 lists it: LastModified to the whole second."""
    return S3Object("nc/c/a_1950/frames/georef/x.tif", "etag", 1,
                    datetime(2026, 5, 1, 12, 0, second, tzinfo=timezone.utc))


@pytest.mark.parametrize("second, new", [(29, False), (30, True), (31, True)])
def test_objects_from_the_second_the_last_run_began_count_as_new(second, new):
    # An upload at 12:00:30.9, after the run that began at 12:00:30.6 listed
    # the bucket, is listed as 12:00:30: it must not be taken as already seen.
    assert listed(second).changed_since(last_success_start({"prev_start_date_success": RUN_START})) is new


@pytest.mark.parametrize("context", [{}, {"prev_start_date_success": None}])
def test_without_a_previous_success_everything_is_new(context):
    assert last_success_start(context) is None
    assert listed(0).changed_since(None)

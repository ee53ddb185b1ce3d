"""Airflow operators of ls4: thin wrappers that do I/O through provider hooks
and hand the work to the core modules."""

from ls4_ops.operators.collection import (
    CollectionOverviewOperator,
    PlanUploadsOperator,
    PublishMapfileOperator,
    ReportRunOperator,
    TileIndexOperator,
    WmsServedOperator,
)
from ls4_ops.operators.compiled import CompileIndexOperator
from ls4_ops.operators.discovery import DiscoverCollectionsOperator, RouteUploadsOperator
from ls4_ops.operators.frames import CogOperator, CompressOperator, OverviewsOperator
from ls4_ops.operators.preview import PublishPreviewOperator

__all__ = [
    "CogOperator",
    "CollectionOverviewOperator",
    "CompileIndexOperator",
    "CompressOperator",
    "DiscoverCollectionsOperator",
    "OverviewsOperator",
    "PlanUploadsOperator",
    "PublishMapfileOperator",
    "PublishPreviewOperator",
    "ReportRunOperator",
    "RouteUploadsOperator",
    "TileIndexOperator",
    "WmsServedOperator",
]

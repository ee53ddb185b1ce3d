"""The collection's preview page, published beside its mapfile."""

from __future__ import annotations

from ls4_ops import mapfile, preview, tileindex
from ls4_ops.operators.base import CollectionOperator


class PublishPreviewOperator(CollectionOperator):
    """Render the collection's preview page and publish it to ``mapfiles/`` beside the mapfile.

    The mapfile sync brings it to the MapServer host, which serves it at
    ``/preview/{collection}.html``: the WMS imagery and footprints over
    OpenStreetMap, and the attributes of the frames under a click. Returns
    the page's URL.

    :param published: what PublishMapfileOperator returned (the page shows its extent)
    :param leaflet_url: where the MapServer host serves Leaflet (a path on its origin)
    """

    template_fields = ("published", "leaflet_url")

    def __init__(self, *, published, leaflet_url: str = preview.LEAFLET_URL, **kwargs):
        super().__init__(**self.take_collection(kwargs))
        self.published = published
        self.leaflet_url = leaflet_url

    def execute(self, context):
        settings = self.settings
        page = preview.render(self.collection, settings.wms_url, self.published["extent"], self.leaflet_url)
        self.s3.put_text(page, self.bucket_name, self.collection.preview_key, content_type="text/html; charset=utf-8",
                         metadata={**mapfile.s3fs_metadata(settings.mapfile_uid, settings.mapfile_gid),
                                   tileindex.GENERATION_METADATA: str(self.published["generation"])})
        url = preview.preview_url(self.collection, settings.wms_url)
        self.log.info("preview page of %s: %s", self.collection.name, url)
        return url

"""S3 endpoint settings shared by boto3 and GDAL (``/vsis3/``).

The same code talks to AWS S3, MinIO and a local emulator: only the endpoint
differs. GDAL wants the endpoint without a scheme and path-style addressing
for anything that is not AWS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

# GDAL otherwise lists the whole prefix when it opens one object.
GDAL_DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.ovr,.msk",
    # An upload replaced under the same key must be read anew, not from the
    # cache of a process that read its previous version.
    "CPL_VSIL_CURL_NON_CACHED": "/vsis3/",
    # A passing S3 hiccup must not look like a corrupt upload.
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
}


@dataclass(frozen=True)
class S3Endpoint:
    access_key: str | None = None
    secret_key: str | None = None
    endpoint_url: str | None = None  # None means AWS itself
    region: str = "us-east-1"
    session_token: str | None = None

    @classmethod
    def from_env(cls) -> "S3Endpoint":
        return cls(
            access_key=os.environ.get("LS4_S3_ACCESS_KEY") or None,
            secret_key=os.environ.get("LS4_S3_SECRET_KEY") or None,
            endpoint_url=os.environ.get("LS4_S3_ENDPOINT") or None,
            region=os.environ.get("LS4_S3_REGION", "us-east-1"),
        )

    def boto3_client(self, service: str = "s3", config=None):
        """A boto3 client of ``service`` on this endpoint (the local emulator serves SQS and SNS
        too); ``config``: a ``botocore.config.Config`` (retries, timeouts)."""
        import boto3

        return boto3.client(
            service,
            config=config,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
        )

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for the endpoint, without credentials."""
        options = dict(GDAL_DEFAULTS)
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            options["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
            options["AWS_HTTPS"] = "YES" if parts.scheme == "https" else "NO"
            options["AWS_VIRTUAL_HOSTING"] = "FALSE"
        return options

    def rasterio_env(self, **extra):
        import rasterio
        from rasterio.session import AWSSession

        session = AWSSession(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            region_name=self.region,
            endpoint_url=self.gdal_options().get("AWS_S3_ENDPOINT"),
        )
        return rasterio.Env(session=session, **self.gdal_options(), **extra)


def vsis3_path(bucket: str, key: str) -> str:
    return f"/vsis3/{bucket}/{key}"

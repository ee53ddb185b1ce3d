"""The local S3 API: moto's server, with its buckets kept on disk across restarts.

It serves SQS and SNS too, and sends the bucket's event notifications to its
queues (queues, topics and messages are not kept: the stack makes them at
each start).

A bucket whose Object Ownership is "BucketOwnerEnforced" refuses ACLs as AWS
does (moto keeps the setting but accepts them): PutObjectAcl, and a PUT that
sets a canned ACL other than bucket-owner-full-control or a grant, answer
400 AccessControlListNotSupported. The local stack's bucket is made so,
like every AWS bucket made since April 2023, unless LS4_PUBLIC_ACCESS=acl.

A bucket policy decides an anonymous HEAD as AWS does, by s3:GetObject
(moto asks it about "s3:HeadObject", an action no policy may name, so GDAL's
/vsicurl/, which starts with a HEAD, could not open a public COG).

moto keeps everything in memory, so stopping it used to empty the local
bucket while PostGIS and Airflow kept their state: the index then pointed
at COGs that were gone. This server loads the buckets it saved when it
starts, and saves them (to a new file, renamed into place) when it stops and
a couple of seconds after any change, as a real S3 keeps its objects.

    python include/s3_emulator.py --host 127.0.0.1 --port 9000 --data .state/s3/buckets.pickle
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import tempfile
import threading

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.s3.models import FakeBucket, s3_backends
from werkzeug.serving import run_simple
from werkzeug.wrappers import Request

SAVE_AFTER_S = 2.0
CHANGES = {"PUT", "POST", "DELETE"}
ACL_HEADERS = ("x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp", "x-amz-grant-write-acp",
               "x-amz-grant-full-control")
ACLS_NOT_SUPPORTED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessControlListNotSupported</Code>'
                      b"<Message>The bucket does not allow ACLs</Message></Error>")


def is_sqs_or_sns(environ) -> bool:
    """An SQS or SNS call (all are POSTs): not a change to the buckets, and a 20 s long
    poll must not hold the lock S3 writes wait on. Told by its signature's service name
    or its JSON protocol target (presigned S3 requests carry no Authorization header)."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    return ("/sqs/aws4_request" in authorization or "/sns/aws4_request" in authorization
            or environ.get("HTTP_X_AMZ_TARGET", "").startswith("AmazonSQS"))


def head_is_get_object() -> None:
    """What AWS checks for a HEAD of an object is s3:GetObject; moto checks s3:HeadObject."""
    get_permission = FakeBucket.get_permission

    def as_aws_does(self, action: str, resource: str):
        return get_permission(self, "s3:GetObject" if action == "s3:HeadObject" else action, resource)

    FakeBucket.get_permission = as_aws_does


def sets_an_acl(request: Request) -> bool:
    canned = request.headers.get("x-amz-acl")
    return ("acl" in request.args or (canned is not None and canned != "bucket-owner-full-control")
            or any(header in request.headers for header in ACL_HEADERS))


def acls_disabled(bucket_name: str) -> bool:
    """Whether the bucket's Object Ownership is "bucket owner enforced" (ACLs disabled)."""
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets.get(bucket_name)
    return bucket is not None and bucket.ownership_rule == "BucketOwnerEnforced"  # as moto keeps it


def refuse_acls_where_disabled(app):
    """AWS's answer to an ACL on a bucket with ACLs disabled (path-style requests, as ls4's)."""
    def application(environ, start_response):
        # A PUT of an object or its ACL, and the POST that starts a multipart upload.
        if environ.get("REQUEST_METHOD") in ("PUT", "POST") and not is_sqs_or_sns(environ):
            request = Request(environ)
            parts = request.path.lstrip("/").split("/", 1)
            if len(parts) == 2 and parts[1] and sets_an_acl(request) and acls_disabled(parts[0]):
                start_response("400 Bad Request", [("Content-Type", "application/xml")])
                return [ACLS_NOT_SUPPORTED]
        return app(environ, start_response)
    return application


class PersistentBuckets:
    """The S3 backend's buckets, loaded from and saved to one file."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.RLock()  # changes and saving never overlap
        self.dirty = threading.Event()

    @property
    def backend(self):
        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def load(self) -> None:
        if os.path.exists(self.path):
            with open(self.path, "rb") as handle:
                self.backend.buckets.update(pickle.load(handle))

    def save(self) -> None:
        with self.lock:
            self.dirty.clear()
            data = pickle.dumps(dict(self.backend.buckets))
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, self.path)

    def save_when_changed(self) -> None:
        while True:
            self.dirty.wait()
            threading.Event().wait(SAVE_AFTER_S)  # one save for a burst of changes
            self.save()

    def wrap(self, app):
        def application(environ, start_response):
            if environ.get("REQUEST_METHOD") not in CHANGES or is_sqs_or_sns(environ):
                return app(environ, start_response)
            with self.lock:
                # The body is produced here, inside the lock: the change is complete when saved.
                body = list(app(environ, start_response))
            self.dirty.set()
            return body
        return application


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="file the buckets are kept in")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    head_is_get_object()
    buckets = PersistentBuckets(args.data)
    buckets.load()

    def stop(signum, frame):
        buckets.save()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=buckets.save_when_changed, daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, refuse_acls_where_disabled(buckets.wrap(app)), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()

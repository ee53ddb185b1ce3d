"""The local S3 API: moto's server, with its buckets kept on disk across restarts.

It serves SQS and SNS too, and sends the bucket's event notifications to its
queues (queues, topics and messages are not kept: the stack makes them at
each start).

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
from moto.s3.models import s3_backends
from werkzeug.serving import run_simple

SAVE_AFTER_S = 2.0
CHANGES = {"PUT", "POST", "DELETE"}


def is_sqs_or_sns(environ) -> bool:
    """An SQS or SNS call (all are POSTs): not a change to the buckets, and a 20 s long
    poll must not hold the lock S3 writes wait on. Told by its signature's service name
    or its JSON protocol target (presigned S3 requests carry no Authorization header)."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    return ("/sqs/aws4_request" in authorization or "/sns/aws4_request" in authorization
            or environ.get("HTTP_X_AMZ_TARGET", "").startswith("AmazonSQS"))


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
    buckets = PersistentBuckets(args.data)
    buckets.load()

    def stop(signum, frame):
        buckets.save()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=buckets.save_when_changed, daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, buckets.wrap(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()

"""A TCP proxy in front of a real service, for outages injected while a run is in flight.

The service itself keeps running (and keeps its data): the proxy is what is cut,
as a network partition would cut it. While cut it refuses new connections and
has closed the open ones; restored, it forwards again.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager

BUFFER = 2**16


class CuttableProxy:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.refused = 0  # connections turned away while cut
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self.lock:
            self.open.discard(end)
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            ends = list(self.open)
        for end in ends:
            self._close(end)

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    @contextmanager
    def outage(self, after_s: float, lasting_s: float):
        """Cut ``after_s`` seconds from now for ``lasting_s`` seconds, in the background."""
        cut, restore = (threading.Timer(after_s, self.cut), threading.Timer(after_s + lasting_s, self.restore))
        cut.start()
        restore.start()
        try:
            yield self
        finally:
            cut.cancel()
            restore.cancel()
            self.restore()

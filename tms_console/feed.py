"""Keeps a `Fleet` coming from the daemon: a snapshot, then the Watch stream in batches, and a
reconnect by itself when the daemon goes away or comes back.

Runs in threads of its own (the client is synchronous) and hands each batch to `deliver`,
which the owner applies on its own thread (`Fleet` is not thread-safe): the Textual console
as a posted Textual message, the Jupyter dashboard under its lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from tms_console.fleet import Followup, Update, fetch, followup, snapshot
from tms_core.api import tms_pb2 as pb
from tms_core.api.client import ClientError, TmsClient

log = logging.getLogger(__name__)

CONNECTING, LIVE, UNREACHABLE = "connecting", "live", "unreachable"


class _StreamEnded(Exception):
    pass


class FleetFeed:
    """Delivers `Update`s for a `Fleet` until stopped.

    `status(state, message)` hears `connecting`, `live` and `unreachable` (with the client's
    one-line reason); after `unreachable` the feed tries again every `retry_s` and, once
    through, delivers a fresh snapshot (complete) so nothing missed while away stays wrong.
    Events that arrive within `batch_s` of each other go out as one batch, with the leases
    they touched fetched once.
    """

    def __init__(
        self,
        target: str,
        deliver: Callable[[Update], None],
        status: Callable[[str, str], None] = lambda state, message: None,
        *,
        retry_s: float = 1.0,
        batch_s: float = 0.05,
        client_factory: Callable[[str], TmsClient] = TmsClient,
    ) -> None:
        self.target = target
        self._deliver = deliver
        self._status = status
        self._retry_s = retry_s
        self._batch_s = batch_s
        self._client_factory = client_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: TmsClient | None = None

    def start(self) -> FleetFeed:
        self._thread = threading.Thread(target=self._run, name="tms-fleet-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()  # cancels the Watch stream the reader waits on
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._status(CONNECTING, self.target)
            client = self._client = self._client_factory(self.target)
            events: queue.Queue[pb.Event | Exception] = queue.Queue()
            reader = threading.Thread(
                target=self._read, args=(client, events), name="tms-fleet-watch", daemon=True
            )
            reader.start()
            try:
                self._deliver(snapshot(client))
                self._status(LIVE, self.target)
                self._follow(client, events)
            except (ClientError, _StreamEnded) as exc:
                if not self._stop.is_set():
                    self._status(UNREACHABLE, str(exc))
            except Exception as exc:  # a bug here must not end the feed for good
                log.exception("fleet feed failed")
                self._status(UNREACHABLE, f"{type(exc).__name__}: {exc}")
            finally:
                self._client = None
                client.close()
                reader.join(5)
            self._stop.wait(self._retry_s)

    def _read(self, client: TmsClient, events: queue.Queue[pb.Event | Exception]) -> None:
        try:
            # The replay of the kept events fills the log; the fleet drops the ones it has.
            for event in client.watch(replay=True):
                events.put(event)
            events.put(_StreamEnded(f"the daemon at {self.target} ended the event stream"))
        except ClientError as exc:
            events.put(exc)

    def _follow(self, client: TmsClient, events: queue.Queue[pb.Event | Exception]) -> None:
        while not self._stop.is_set():
            try:
                first = events.get(timeout=0.25)
            except queue.Empty:
                continue
            batch: list[pb.Event] = []
            item: pb.Event | Exception = first
            deadline = time.monotonic() + self._batch_s
            while True:
                if isinstance(item, Exception):
                    if batch:
                        self._deliver(Update(events=batch))
                    raise item
                batch.append(item)
                try:
                    item = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            follow = Followup()
            for event in batch:
                follow.merge(followup(event))
            update = fetch(client, follow)
            update.events = batch
            self._deliver(update)

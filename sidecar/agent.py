"""The sidecar's loops: follow the daemon's assignment, converge Triton on it, report back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from sidecar import metrics, triton_metrics
from sidecar.daemon_api import SidecarStub
from sidecar.ensemble import StepsFailed, ensemble_steps, forbid_bytecode, steps_ready
from sidecar.measure import GpuReader, measure, measure_all
from sidecar.triton_grpc import IndexEntry, TritonError, TritonGone, TritonGrpc
from tms_core.api import tms_pb2 as pb

if TYPE_CHECKING:
    from sidecar.fetch import Fetcher

log = logging.getLogger("sidecar")

HEARTBEAT_S = 2.0
# The daemon refuses a report whose model error is longer than 8192 characters
# (tms_core/api/bounds.py); Triton's errors can quote a whole model configuration.
MAX_ERROR = 4000
# How long an unloaded model's processes (and their GPU memory) may take to go away.
RECLAIM_TIMEOUT_S = 5.0
# Triton keeps an unloaded model in UNLOADING for about a second before it is gone.
UNLOAD_TIMEOUT_S = 60.0
# Download progress is reported at most this often (the daemon turns each into an event).
PROGRESS_INTERVAL_S = 0.25
# Triton's metrics (the load autoscaling follows) are read this often while a model is
# ready; a changed reading is reported at once. A local scrape and its parsing measured
# 0.6 ms wall, 0.4 ms of the sidecar's CPU (tritonserver 2.51, one model): 0.2 % of a core.
LOAD_INTERVAL_S = 0.25
# The node cache is read again after each fetch or removal, else at most this often.
CACHE_READ_S = 10.0


@dataclass
class ModelStatus:
    name: str
    uri: str
    state: pb.ModelState
    error: str = ""
    load_s: float = 0.0
    inference_count: int = 0
    last_inference_ms: int = 0
    memory_bytes: int = 0
    gpu_memory_bytes: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    load: triton_metrics.ModelLoad | None = None
    load_read_at: float = 0.0


class ServerGone(Exception):
    """The daemon no longer knows this server: the sidecar's work is over."""


class Agent:
    def __init__(
        self,
        *,
        daemon: str,
        server_id: str,
        triton: TritonGrpc,
        model_dir: Path,
        stats_interval: float = 1.0,
        metrics_address: str = "",
        fetcher: Fetcher | Future[Fetcher] | None = None,
        credential: str = "",
    ) -> None:
        # A future while `python -m sidecar` still imports the repository machinery in a
        # thread (see __main__); None: the default settings, made at first use.
        self._fetcher_source = fetcher
        self._stats_interval = stats_interval
        self._metrics_address = metrics_address
        # The daemon accepts this server's Connect and Report only with its credential.
        self._metadata = (("authorization", f"Bearer {credential}"),) if credential else ()
        self._gpu = GpuReader()
        self._daemon = daemon
        self._server_id = server_id
        self._triton = triton
        self._model_dir = model_dir
        self._desired: dict[str, str] = {}
        self._generation = 0
        self._status: dict[str, ModelStatus] = {}
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, frozenset[str]] = {}
        """Ensembles whose load waits for their steps, and those steps."""
        self._changed = asyncio.Event()
        """Set, and replaced, when a model's status or the assignment changes."""
        self._triton_ready = False
        self._leak = ""
        self._converge = asyncio.Event()
        self._reseed = asyncio.Event()
        """Set when Triton was restarted elsewhere: the converge loop starts over."""

        self._assigned = asyncio.Event()
        self._dirty = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._cache: pb.ModelCacheStatus | None = None
        self._cache_read_at = -CACHE_READ_S

    async def run(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._daemon)
        stub = SidecarStub(self._channel)
        tasks = [
            asyncio.create_task(self._follow_assignment(stub), name="assignment"),
            asyncio.create_task(self._converge_loop(), name="converge"),
            asyncio.create_task(self._report_loop(stub), name="report"),
            asyncio.create_task(self._stats_loop(), name="stats"),
            asyncio.create_task(self._load_loop(), name="load"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in [*tasks, *self._busy.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self._busy.values(), return_exceptions=True)
            await self._channel.close()

    async def _follow_assignment(self, stub: SidecarStub) -> None:
        backoff = 0.05
        while True:
            try:
                stream = stub.Connect(
                    pb.SidecarHello(server_id=self._server_id), metadata=self._metadata
                )
                async for assignment in stream:
                    backoff = 0.05
                    self._follow_triton(assignment.triton_grpc)
                    self._desired = {m.name: m.uri for m in assignment.models}
                    self._generation = assignment.generation
                    self._assigned.set()
                    self._tell_changed()
                    log.info("assignment %d: %s", self._generation, sorted(self._desired))
                    self._converge.set()
                    self._dirty.set()
                log.info("the daemon ended this server's assignment")
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise ServerGone(exc.details()) from None
                # The daemon is restarting or not up yet: keep serving and try again.
                log.debug("daemon unreachable (%s); retrying in %.2fs", exc.code(), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _follow_triton(self, address: str) -> None:
        """Talks to Triton where the daemon says it is now. A crashed tritonserver is
        restarted on new ports beside this sidecar, which then loads everything again at once
        rather than the daemon waiting for a new sidecar process to start. (The restart may
        also have come before this sidecar's first assignment: compared with the address in
        use, not with the last one said.)"""
        if not address or address == self._triton.address:
            return  # "": a daemon that leaves it to the sidecar (a pod's Triton is beside it)
        log.warning("triton restarted at %s: loading everything there again", address)
        old, self._triton = self._triton, TritonGrpc(address)
        # What was loaded, or being loaded, died with the old Triton.
        for task in self._busy.values():
            task.cancel()
        self._busy.clear()
        old.close()
        self._status = {}
        self._triton_ready = False
        self._reseed.set()
        self._converge.set()
        self._dirty.set()

    async def _converge_loop(self) -> None:
        while True:
            self._reseed.clear()
            await self._wait_triton_ready()
            self._seed_from_index(await self._settled_index())
            # Only now is the report complete: the daemon reads a model missing from a ready
            # server's report as unloaded, so ready must not be said before the seeding.
            self._triton_ready = True
            self._dirty.set()
            # Until the daemon has said what it wants, an empty wish list means "unknown",
            # not "unload everything".
            await self._assigned.wait()
            await self._converge_on_assignment()

    async def _converge_on_assignment(self) -> None:
        """Loads and unloads until the assignment is met; returns when Triton moved."""
        while not self._reseed.is_set():
            self._converge.clear()
            for name, uri in self._desired.items():
                current = self._status.get(name)
                if name in self._busy:
                    continue
                if current is None or current.state == pb.MODEL_UNLOADED:
                    self._start(name, self._load(name, uri))
                elif not current.uri and current.state == pb.MODEL_READY:
                    # Found loaded at start-up: it is the assigned model, keep it.
                    self._set(name, uri, pb.MODEL_READY)
                elif not current.uri:
                    # Found on disk but not loaded at start-up: fetch it afresh and load it.
                    self._start(name, self._load(name, uri))
                elif current.uri != uri and current.uri:
                    self._start(name, self._unload(name))
            for name, current in self._status.items():
                if name in self._desired or name in self._busy:
                    continue
                if current.state != pb.MODEL_UNLOADED:
                    self._start(name, self._unload(name))
            await self._converge.wait()

    def _start(self, name: str, work: object) -> None:
        async def run() -> None:
            try:
                await work  # type: ignore[misc]
            finally:
                # A task cancelled when Triton moved may end after its successor started.
                if self._busy.get(name) is task:
                    del self._busy[name]
                self._converge.set()

        task = asyncio.create_task(run(), name=f"model:{name}")
        self._busy[name] = task

    async def _wait_triton_ready(self) -> None:
        # Triton offers nothing to wait on but its health endpoint; it is up in ~0.1 s.
        while not await asyncio.to_thread(self._triton.ready):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        log.info("triton is ready")

    async def _settled_index(self) -> list[IndexEntry]:
        """Triton's index once no model is halfway through a load or an unload (which an
        earlier sidecar, killed with its daemon, may have started)."""
        deadline = time.monotonic() + UNLOAD_TIMEOUT_S
        while True:
            entries = await asyncio.to_thread(self._triton.index)
            busy = [e.name for e in entries if e.state in ("LOADING", "UNLOADING")]
            if not busy or time.monotonic() > deadline:
                return entries
            await asyncio.sleep(0.05)

    def _seed_from_index(self, entries: list[IndexEntry]) -> None:
        # A sidecar started beside a running Triton (the daemon adopted it) takes what is
        # loaded as loaded, and what is merely on disk as not loaded; the assignment then
        # claims each one or has it unloaded and removed. The URI is unknown ("") until then.
        for entry in entries:
            if entry.name not in self._status:
                state = pb.MODEL_READY if entry.state == "READY" else pb.MODEL_PENDING
                self._status[entry.name] = ModelStatus(entry.name, "", state)

    def _set(
        self,
        name: str,
        uri: str,
        state: pb.ModelState,
        error: str = "",
        load_s: float = 0.0,
    ) -> None:
        said = " ".join(error.split())
        if len(said) > MAX_ERROR:
            said = said[: MAX_ERROR - 1] + "…"
        self._status[name] = ModelStatus(name, uri, state, said, load_s)
        self._dirty.set()
        self._tell_changed()

    def _tell_changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _progress(self, status: ModelStatus) -> Callable[[int, int], None]:
        """A fetch's progress callback (called on the fetching thread): records the bytes on
        `status` and wakes the report loop, at most every PROGRESS_INTERVAL_S."""
        loop = asyncio.get_running_loop()
        last = -PROGRESS_INTERVAL_S

        def tell(done: int, total: int) -> None:
            nonlocal last
            status.bytes_done, status.bytes_total = done, total
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_S or (total and done >= total):
                last = now
                loop.call_soon_threadsafe(self._dirty.set)

        return tell

    async def _fetcher(self) -> Fetcher:
        source = self._fetcher_source
        if source is None:
            from sidecar.fetch import Fetcher, PlainSettings

            source = Fetcher(PlainSettings(), self._model_dir, None)
        elif isinstance(source, Future):
            source = await asyncio.wrap_future(source)
        self._fetcher_source = source
        return source

    async def _load(self, name: str, uri: str) -> None:
        self._set(name, uri, pb.MODEL_FETCHING)
        tell = self._progress(self._status[name])
        fetched = [0]

        def progress(done: int, total: int) -> None:
            fetched[0] = max(fetched[0], done)
            tell(done, total)

        started = time.monotonic()
        try:
            fetcher = await self._fetcher()
        except Exception as exc:
            # Bad repository settings from the daemon: every fetch would fail the same way.
            log.exception("the repository settings could not be read")
            self._set(name, uri, pb.MODEL_FAILED, f"fetch failed: repository settings: {exc}")
            return
        from tms_core.repos.policy import RepositoryError

        try:
            downloaded = await asyncio.to_thread(fetcher.fetch, name, uri, progress)
        except (RepositoryError, OSError) as exc:
            metrics.LOADS.labels("fetch_failed").inc()
            self._set(name, uri, pb.MODEL_FAILED, f"fetch failed: {exc}")
            return
        finally:
            self._cache_read_at = -CACHE_READ_S
        metrics.FETCH_SECONDS.observe(time.monotonic() - started)
        metrics.FETCH_BYTES.labels("download" if downloaded else "cache").inc(fetched[0])
        self._set(name, uri, pb.MODEL_LOADING)
        steps = ensemble_steps(self._model_dir / name)
        if steps:
            waited = await self._wait_for_steps(name, steps)
            if waited:
                metrics.LOADS.labels("failed").inc()
                self._set(name, uri, pb.MODEL_FAILED, waited)
                return
        else:
            # So that an ensemble's load does not load this model again (sidecar/ensemble.py).
            await asyncio.to_thread(forbid_bytecode, self._model_dir / name)
        started = time.monotonic()
        # NVML, for the memory measured after the load, is loaded meanwhile (once): the load
        # leaves this process idle for a second, while a cold lease waits on its start.
        opening = asyncio.ensure_future(asyncio.to_thread(self._gpu.open))
        try:
            await asyncio.to_thread(self._triton.load, name)
        except TritonGone as exc:
            # Triton died under the load (a model that crashes it, or a kill): the daemon sees
            # the exit and revives the server, counting the crash against it; a model marked
            # FAILED here would end the lease before that.
            log.warning("triton went away while loading %s: %s", name, exc)
            return
        except (TritonError, OSError) as exc:
            metrics.LOADS.labels("failed").inc()
            self._set(name, uri, pb.MODEL_FAILED, str(exc))
            return
        load_s = time.monotonic() - started
        metrics.LOADS.labels("ready").inc()
        metrics.LOAD_SECONDS.observe(load_s)
        await opening
        # Measured before READY is said, so the daemon learns both in one report.
        usage = await asyncio.to_thread(measure_all, self._model_dir, [name], self._gpu)
        self._set(name, uri, pb.MODEL_READY, load_s=load_s)
        status = self._status[name]
        status.memory_bytes, status.gpu_memory_bytes = usage[name]
        log.info("loaded %s in %.2fs", name, load_s)

    async def _wait_for_steps(self, name: str, steps: frozenset[str]) -> str:
        """Waits until every model the ensemble `name` calls is READY on this server.
        Returns why the ensemble cannot load, or "" once it can."""
        self._waiting[name] = steps
        try:
            while True:
                changed = self._changed
                try:
                    if steps_ready(name, steps, self._desired, self._status, self._waiting):
                        return ""
                except StepsFailed as exc:
                    return str(exc)
                await changed.wait()
        finally:
            del self._waiting[name]

    async def _unload(self, name: str) -> None:
        current = self._status[name]
        self._set(name, current.uri, pb.MODEL_UNLOADING)
        if current.state != pb.MODEL_FAILED:
            try:
                await asyncio.to_thread(self._triton.unload, name)
            except (TritonError, OSError) as exc:
                log.warning("unload of %s failed: %s", name, exc)
            deadline = time.monotonic() + UNLOAD_TIMEOUT_S
            while time.monotonic() < deadline:
                entries = await asyncio.to_thread(self._triton.index)
                if not any(e.name == name and e.state in ("READY", "UNLOADING") for e in entries):
                    break
                await asyncio.sleep(0.05)
        # Removing the directory takes the model out of Triton's repository index too.
        await asyncio.to_thread((await self._fetcher()).remove, name)
        self._cache_read_at = -CACHE_READ_S
        await self._check_reclaimed(name)
        self._set(name, current.uri, pb.MODEL_UNLOADED)
        metrics.UNLOADS.inc()
        log.info("unloaded %s", name)

    async def _check_reclaimed(self, name: str) -> None:
        """Confirms the unload gave the model's memory back: its processes have gone, and with
        them their resident and GPU memory. A server that keeps it is reported as leaking."""
        deadline = time.monotonic() + RECLAIM_TIMEOUT_S
        while True:
            rss, gpu = await asyncio.to_thread(measure, self._model_dir, name, self._gpu)
            if rss == 0 and gpu == 0:
                return
            if time.monotonic() > deadline:
                held = f"{rss / 2**20:.0f} MiB" + (f" and {gpu / 2**20:.0f} MiB GPU" if gpu else "")
                self._leak = f"{name} still holds {held} after its unload"
                log.warning("memory not reclaimed: %s", self._leak)
                return
            await asyncio.sleep(0.1)

    async def _stats_loop(self) -> None:
        """Reads Triton's inference counters, which keep activity-renewed leases alive."""
        while True:
            await asyncio.sleep(self._stats_interval)
            if not self._triton_ready:
                continue
            try:
                stats = await asyncio.to_thread(self._triton.stats)
            except (TritonError, OSError, ValueError) as exc:
                log.debug("reading inference statistics failed: %s", exc)
                continue
            ready = []
            for name, (count, last_ms) in stats.items():
                status = self._status.get(name)
                if status is None or status.state != pb.MODEL_READY:
                    continue
                ready.append(name)
                if (count, last_ms) != (status.inference_count, status.last_inference_ms):
                    status.inference_count, status.last_inference_ms = count, last_ms
                    self._dirty.set()
            # Memory grows after load too (buffers allocated by the first inferences).
            await self._measure(ready)

    async def _load_loop(self) -> None:
        """Reads the ready models' load from Triton's metrics every LOAD_INTERVAL_S: a
        load step reaches the daemon's autoscaler within that, not within the statistics'
        second (a replica added 1 s late is most of a cold start late)."""
        if not self._metrics_address:
            # Nothing to read; the task waits (`run` ends when any of its tasks ends).
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(LOAD_INTERVAL_S)
            if not self._triton_ready:
                continue
            ready = [n for n, s in self._status.items() if s.state == pb.MODEL_READY]
            await self._read_load(ready)

    async def _read_load(self, ready: list[str]) -> None:
        """Reads each ready model's load from Triton's metrics endpoint (what the daemon
        autoscales on); a changed reading is reported with the next report."""
        if not self._metrics_address or not ready:
            return
        try:
            loads = await asyncio.to_thread(triton_metrics.read, self._metrics_address)
        except (OSError, ValueError) as exc:
            log.debug("reading Triton's metrics failed: %s", exc)
            return
        read_at = time.time()
        for name in ready:
            status = self._status.get(name)
            load = loads.get(name)
            if status is None or load is None:
                continue
            # Every reading is dated (the next report carries the latest), but only a change
            # is reported at once: an idle model's rates fall to 0 with the heartbeats.
            status.load_read_at = read_at
            if load != status.load:
                status.load = load
                self._dirty.set()

    async def _measure(self, names: list[str]) -> None:
        if not names:
            return
        usage = await asyncio.to_thread(measure_all, self._model_dir, names, self._gpu)
        for name, (rss, gpu) in usage.items():
            status = self._status.get(name)
            if status is None:
                continue
            # Report the peak: placement must plan for what the model can take, not its low.
            if rss > status.memory_bytes or gpu > status.gpu_memory_bytes:
                status.memory_bytes = max(rss, status.memory_bytes)
                status.gpu_memory_bytes = max(gpu, status.gpu_memory_bytes)
                self._dirty.set()

    async def _read_cache(self) -> None:
        """The node cache's size and contents, for the daemon's `tms cluster` / `tms models`:
        read again after a fetch or a removal, else every CACHE_READ_S."""
        now = time.monotonic()
        if now - self._cache_read_at < CACHE_READ_S:
            return
        source = self._fetcher_source
        if isinstance(source, Future) and not source.done():
            return  # nothing fetched yet, so nothing cached by this sidecar to show
        self._cache_read_at = now
        try:
            cache = (await self._fetcher()).cache
        except Exception:
            return  # said where a fetch needs it (_load)
        if cache is None:
            return
        try:
            entries = await asyncio.to_thread(cache.entries)
        except OSError as exc:
            log.debug("reading the model cache failed: %s", exc)
            return
        self._cache = pb.ModelCacheStatus(
            size_bytes=sum(e.size for e in entries),
            cap_bytes=cache.max_bytes,
            models=[
                pb.CachedModel(
                    name=e.name,
                    uri=e.uri,
                    bytes=e.size,
                    last_used=e.last_used,
                    in_use=e.in_use,
                    version=e.version,
                )
                for e in entries
            ],
            read_at=time.time(),
            server_id=self._server_id,
        )

    async def _report_loop(self, stub: SidecarStub) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=HEARTBEAT_S)
            except TimeoutError:
                pass
            self._dirty.clear()
            await self._read_cache()
            report = pb.SidecarReport(
                server_id=self._server_id,
                triton_ready=self._triton_ready,
                generation=self._generation,
                leak=self._leak,
                models=[
                    pb.ModelReport(
                        name=s.name,
                        uri=s.uri,
                        state=s.state,
                        error=s.error,
                        load_s=s.load_s,
                        inference_count=s.inference_count,
                        last_inference_ms=s.last_inference_ms,
                        memory_bytes=s.memory_bytes,
                        gpu_memory_bytes=s.gpu_memory_bytes,
                        bytes_done=s.bytes_done if s.state == pb.MODEL_FETCHING else 0,
                        bytes_total=s.bytes_total if s.state == pb.MODEL_FETCHING else 0,
                        **_load_fields(s.load, s.load_read_at),
                    )
                    for s in self._status.values()
                ],
                cache=self._cache,
            )
            sent = {n for n, s in self._status.items() if s.state == pb.MODEL_UNLOADED}
            try:
                await stub.Report(report, timeout=5.0, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                metrics.REPORTS.labels("failed").inc()
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise ServerGone(exc.details()) from None
                self._dirty.set()
                await asyncio.sleep(0.2)
                continue
            metrics.REPORTS.labels("sent").inc()
            # An unloaded model is reported once, then forgotten.
            for name in sent:
                current = self._status.get(name)
                if current is not None and current.state == pb.MODEL_UNLOADED:
                    del self._status[name]


def _load_fields(load: triton_metrics.ModelLoad | None, read_at: float) -> dict[str, Any]:
    if load is None:
        return {}
    return {
        "metrics_read_at": read_at,
        "queue_us": load.queue_us,
        "requests": load.requests,
        "inferences": load.inferences,
        "pending": load.pending,
        "has_metrics": True,
    }

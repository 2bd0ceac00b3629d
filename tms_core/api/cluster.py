"""The fleet as `tms cluster` and `tms models` show it: node → GPU (or host memory) → what
is declared and measured in use there, and by which servers and leases."""

from __future__ import annotations

from tms_core.api import tms_pb2 as pb
from tms_core.api.convert import cache_to_pb
from tms_core.domain import Lease, Server
from tms_core.inventory import read_nvml
from tms_core.manager.facade import LeaseManager


def _holders(manager: LeaseManager, server: Server) -> list[Lease]:
    return manager.leases_on(server.id)


def _usage(manager: LeaseManager, server: Server) -> tuple[int, int]:
    """(declared, measured) bytes of the distinct models the server's leases hold."""
    declared: dict[tuple[str, str], int] = {}
    for lease in _holders(manager, server):
        for model in lease.models:
            key = (str(model.name), model.uri)
            declared[key] = max(declared.get(key, 0), model.memory_bytes)
    measured = sum(manager.measured.get(key, 0) for key in declared)
    return sum(declared.values()), measured


def cluster_status(manager: LeaseManager) -> pb.ClusterStatus:
    first = manager.nodes[0].name if manager.nodes else ""
    by_node: dict[str, list[Server]] = {}
    for server in manager.servers.values():
        if server.state.alive:
            by_node.setdefault(server.node or first, []).append(server)
    statuses = []
    for node in manager.nodes:
        cpu = pb.ResourceStatus(total_bytes=node.host_memory)
        gpus = {
            gpu.index: pb.GpuStatus(
                index=gpu.index,
                product=gpu.product,
                memory=pb.ResourceStatus(total_bytes=gpu.total_bytes),
            )
            for gpu in node.gpus
        }
        # A server recorded without a node (before nodes were named) ran on the first one.
        for server in by_node.get(node.name, []):
            declared, measured = _usage(manager, server)
            # A replica record is shown as its lease: that lease uses this server too.
            leases = [lease.replica_of or lease.id for lease in _holders(manager, server)]
            targets = [gpus[i].memory for i in server.gpus if i in gpus] or [cpu]
            for target in targets:
                # A server's models are spread evenly over its GPUs.
                target.declared_bytes += declared // len(targets)
                target.measured_bytes += measured // len(targets)
                target.server_ids.append(server.id)
                target.lease_ids.extend(leases)
                if manager.standby.is_standby(server):
                    target.standby_server_ids.append(server.id)
        if node.source == "nvml":
            for reading in read_nvml() or ():
                if reading.index in gpus:
                    gpus[reading.index].device_used_bytes = reading.used_bytes
        status = pb.NodeStatus(
            name=node.name,
            labels=node.labels,
            source=node.source,
            cpu=cpu,
            gpus=[gpus[i] for i in sorted(gpus)],
        )
        if node.name in manager.node_caches:
            status.cache.CopyFrom(cache_to_pb(manager.node_caches[node.name]))
        statuses.append(status)
    return pb.ClusterStatus(nodes=statuses)


def models_status(manager: LeaseManager) -> pb.ModelsStatus:
    models: dict[tuple[str, str], pb.ModelMemory] = {}
    for (name, uri), measured in manager.measured.items():
        models[(name, uri)] = pb.ModelMemory(name=name, uri=uri, measured_bytes=measured)
    for lease in manager.leases.values():
        if lease.state.ended:
            continue
        for model in lease.models:
            key = (str(model.name), model.uri)
            entry = models.setdefault(key, pb.ModelMemory(name=key[0], uri=key[1]))
            entry.declared_bytes = max(entry.declared_bytes, model.memory_bytes)
            entry.framework = entry.framework or model.framework
            if (lease.replica_of or lease.id) not in entry.lease_ids:
                entry.lease_ids.append(lease.replica_of or lease.id)
            if lease.server_id and lease.server_id not in entry.server_ids:
                entry.server_ids.append(lease.server_id)
    # Where each model is cached: by name and URI (a cache keeps the URI without `#sha256=`).
    for node, cache in sorted(manager.node_caches.items()):
        for cached in cache.models:
            matching = [
                entry
                for (name, uri), entry in models.items()
                if name == cached.name and uri.split("#", 1)[0] == cached.uri
            ] or [
                models.setdefault(
                    (cached.name, cached.uri), pb.ModelMemory(name=cached.name, uri=cached.uri)
                )
            ]
            for entry in matching:
                if node not in entry.cached_on:
                    entry.cached_on.append(node)
    return pb.ModelsStatus(models=[models[k] for k in sorted(models)])

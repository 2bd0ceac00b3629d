"""A fixed fleet for snapshots and the benchmark: two GPU nodes and a CPU node, leases in
every live state, and their events, at a fixed time."""

from __future__ import annotations

from tms_console.fleet import Update
from tms_core.api import tms_pb2 as pb

GiB = 1024**3
MiB = 1024**2
NOW = 1_790_000_000.0


# NVML's reading of each device: what the models take plus Triton's own ~600 MiB context.
DEVICE_USED = {
    ("a", 0): 17.9 * GiB,
    ("a", 1): 26.6 * GiB,
    ("a", 2): 26.6 * GiB,
    ("b", 0): 2.6 * GiB,
    ("b", 1): 5.6 * GiB,
}


def _gpu(
    node: str, index: int, servers: list[str], product: str = "NVIDIA H100 80GB HBM3"
) -> pb.GpuStatus:
    idle = 600 * MiB if servers else 0
    return pb.GpuStatus(
        index=index,
        product=product,
        device_used_bytes=int(DEVICE_USED.get((node, index), idle)),
        memory=pb.ResourceStatus(total_bytes=80 * GiB, server_ids=servers),
    )


def cluster(gpus_per_node: int = 4, nodes: int = 2) -> pb.ClusterStatus:
    status = pb.ClusterStatus()
    for n in range(nodes):
        name = f"gpu-node-{chr(ord('a') + n)}"
        status.nodes.append(
            pb.NodeStatus(
                name=name,
                source="nvml",
                labels={"zone": "eu-1", "rack": str(n + 1)},
                cpu=pb.ResourceStatus(total_bytes=512 * GiB),
                gpus=[
                    _gpu(name[-1], i, [f"srv-{name[-1]}{i}"] if i < 3 else [])
                    for i in range(gpus_per_node)
                ],
            )
        )
    status.nodes.append(
        pb.NodeStatus(
            name="cpu-node",
            source="declared",
            cpu=pb.ResourceStatus(total_bytes=256 * GiB, server_ids=["srv-cpu"]),
        )
    )
    return status


def lease(
    lease_id: str,
    name: str,
    state: int,
    server: str,
    node: str,
    gpus: list[int],
    models: list[tuple[str, int, int, int]],
    *,
    expires_in: float,
    owner: str = "",
    activity_window_s: float = 0.0,
    used_ago: float | None = None,
    reason: str = "",
    error: str = "",
) -> pb.Lease:
    port = 40000 + int(lease_id[-2:], 16) * 2
    return pb.Lease(
        id=lease_id,
        name=name,
        state=state,  # type: ignore[arg-type]
        reason=reason,
        server_id=server,
        node=node,
        server_gpus=gpus,
        created_at=NOW - 600,
        expires_at=NOW + expires_in,
        duration_s=3600,
        activity_window_s=activity_window_s,
        last_activity_at=NOW - used_ago if used_ago is not None else 0.0,
        labels={"owner": owner} if owner else {},
        endpoints=pb.Endpoints(
            http=f"127.0.0.1:{port}" if server else "",
            grpc=f"127.0.0.1:{port + 1}" if server else "",
        ),
        models=[
            pb.ModelStatus(
                name=m,
                uri=f"s3://models/{m}",
                memory_bytes=declared,
                measured_bytes=measured,
                state=mstate,  # type: ignore[arg-type]
                error=error if mstate == pb.MODEL_FAILED else "",
                load_s=1.42 if mstate == pb.MODEL_READY else 0.0,
            )
            for m, declared, measured, mstate in models
        ],
    )


def leases() -> list[pb.Lease]:
    ready, loading, fetching = pb.MODEL_READY, pb.MODEL_LOADING, pb.MODEL_FETCHING
    return [
        lease(
            "ls-a1",
            "chat",
            pb.LEASE_READY,
            "srv-a0",
            "gpu-node-a",
            [0],
            [("llama-8b", 18 * GiB, 17 * GiB, ready), ("tokenizer", 512 * MiB, 300 * MiB, ready)],
            expires_in=1810,
            owner="ana",
            activity_window_s=600,
            used_ago=12,
        ),
        lease(
            "ls-a2",
            "",
            pb.LEASE_READY,
            "srv-a0",
            "gpu-node-a",
            [0],
            [("llama-8b", 18 * GiB, 17 * GiB, ready)],
            expires_in=95,
            owner="bo",
        ),
        lease(
            "ls-a3",
            "vision",
            pb.LEASE_READY,
            "srv-a1",
            "gpu-node-a",
            [1, 2],
            [("vit-huge", 40 * GiB, 52 * GiB, ready)],
            expires_in=7200,
            owner="chen",
            used_ago=300,
        ),
        lease(
            "ls-b4",
            "embed",
            pb.LEASE_LOADING,
            "srv-b0",
            "gpu-node-b",
            [0],
            [
                ("e5-large", 4 * GiB, 0, loading),
                ("reranker", 2 * GiB, 2 * GiB, ready),
                ("bge-small", 1 * GiB, 0, fetching),
            ],
            expires_in=3595,
        ),
        lease(
            "ls-b5",
            "",
            pb.LEASE_PENDING,
            "",
            "",
            [],
            [("mixtral-8x7b", 90 * GiB, 0, pb.MODEL_PENDING)],
            expires_in=3600,
            owner="dee",
            reason="no GPU has 90.0 GiB free (largest 80.0 GiB)",
        ),
        lease(
            "ls-c6",
            "classify",
            pb.LEASE_READY,
            "srv-cpu",
            "cpu-node",
            [],
            [("blob_classifier", 256 * MiB, 180 * MiB, ready)],
            expires_in=42,
            activity_window_s=300,
            used_ago=2,
        ),
        lease(
            "ls-b7",
            "",
            pb.LEASE_RELEASING,
            "srv-b1",
            "gpu-node-b",
            [1],
            [("whisper", 6 * GiB, 5 * GiB, pb.MODEL_UNLOADING)],
            expires_in=1200,
            owner="ana",
        ),
    ]


def events() -> list[pb.Event]:
    rows = [
        ("server", "srv-a0", "RUNNING", "", "", "srv-a0"),
        ("lease", "ls-a1", "LOADING", "", "ls-a1", "srv-a0"),
        ("model", "llama-8b", "READY", "", "ls-a1", "srv-a0"),
        ("lease", "ls-a1", "READY", "", "ls-a1", "srv-a0"),
        ("name", "chat", "POINTED", "to lease ls-a1", "ls-a1", ""),
        (
            "model",
            "vit-huge",
            "OVER_DECLARED",
            "measured 52.0 GiB, declared 40.0 GiB",
            "ls-a3",
            "srv-a1",
        ),
        ("lease", "ls-b5", "PENDING", "no GPU has 90.0 GiB free (largest 80.0 GiB)", "ls-b5", ""),
        ("model", "e5-large", "LOADING", "", "ls-b4", "srv-b0"),
        ("lease", "ls-b7", "RELEASING", "released by its holder", "ls-b7", "srv-b1"),
    ]
    return [
        pb.Event(
            seq=i + 1,
            at=NOW - 60 + i * 5,
            kind=k,
            id=s,
            state=st,
            reason=r,
            lease_id=lid,
            server_id=sid,
        )
        for i, (k, s, st, r, lid, sid) in enumerate(rows)
    ]


def update() -> Update:
    """Everything at once, as the feed's first batch would bring it."""
    return Update(events=events(), cluster=cluster(), leases=leases(), complete=True)

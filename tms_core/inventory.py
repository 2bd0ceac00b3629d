"""What this machine offers to place on: its GPUs (through NVML, or declared) and its memory.

NVML is read when a GPU and its driver are present. Otherwise the GPUs come from the
configuration (`local.gpus: ["80GiB", "80GiB"]`, or `tms daemon --gpus 2x80GiB`), which is
how placement is developed and simulated on machines without GPUs: declared GPUs are only
accounted, no process is bound to real hardware.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

from tms_core.units import parse_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    product: str
    total_bytes: int
    used_bytes: int = 0
    """Memory in use on the device when it was read (NVML); 0 for declared GPUs."""
    uuid: str = ""


@dataclass(frozen=True)
class Node:
    name: str
    host_memory: int
    gpus: tuple[Gpu, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    source: str = "declared"
    """`nvml` when the GPUs were read from the driver, `kubernetes` when read from a cluster's
    Node, else `declared`."""


def parse_gpus(text: str) -> list[str]:
    """`2x80GiB` or `80GiB,40GiB` as a list of sizes; ValueError says what is wrong."""
    sizes: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        count, sep, size = part.partition("x")
        if sep and count.isdigit():
            sizes.extend([size] * int(count))
        else:
            sizes.append(part)
    for size in sizes:
        parse_size(size)
    return sizes


def read_nvml() -> tuple[Gpu, ...] | None:
    """The GPUs NVML sees, or None when there is no NVML (no library, driver or GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("no GPUs through NVML (%s)", exc)
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(
                Gpu(
                    index=index,
                    product=name.decode() if isinstance(name, bytes) else str(name),
                    total_bytes=int(memory.total),
                    used_bytes=int(memory.used),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


def host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def read_node(
    *,
    declared_gpus: list[str],
    declared_product: str = "declared GPU",
    name: str = "",
    labels: dict[str, str] | None = None,
) -> Node:
    """This machine as a node: NVML's GPUs if there are any, else the declared ones."""
    measured = read_nvml()
    if measured:
        gpus, source = measured, "nvml"
    else:
        gpus = tuple(
            Gpu(index=i, product=declared_product, total_bytes=parse_size(size))
            for i, size in enumerate(declared_gpus)
        )
        source = "declared"
    return Node(
        name=name or socket.gethostname() or "local",
        host_memory=host_memory(),
        gpus=gpus,
        labels=dict(labels or {}),
        source=source,
    )

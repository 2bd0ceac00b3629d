"""`tms cluster` and `tms models`: where memory goes, declared against measured."""

from __future__ import annotations

import json
import time

import click
from rich.markup import escape

from tms_core.api import tms_pb2 as pb
from tms_core.cli import output
from tms_core.cli.common import (
    Context,
    daemon_options,
    one_line_errors,
    output_option,
    pass_context,
)
from tms_core.units import format_duration, format_size

BAR = 24


def _bar(resource: pb.ResourceStatus) -> str:
    """Declared in use as `#`, measured beyond declared as `+`, free as `.`."""
    total = max(resource.total_bytes, 1)
    declared = min(BAR, round(BAR * resource.declared_bytes / total))
    measured = min(BAR, round(BAR * resource.measured_bytes / total))
    extra = max(0, measured - declared)
    return "#" * declared + "+" * min(extra, BAR - declared) + "." * max(0, BAR - declared - extra)


def _resource(resource: pb.ResourceStatus) -> dict[str, object]:
    return {
        "total_bytes": resource.total_bytes,
        "declared_bytes": resource.declared_bytes,
        "measured_bytes": resource.measured_bytes,
        "servers": list(resource.server_ids),
        "standby": list(resource.standby_server_ids),
        "leases": list(resource.lease_ids),
    }


def _line(label: str, resource: pb.ResourceStatus) -> str:
    standby = len(resource.standby_server_ids)
    return (
        f"  {label:<28} [{_bar(resource)}] {format_size(resource.total_bytes):>10}  "
        f"declared {format_size(resource.declared_bytes):>10}  "
        f"measured {format_size(resource.measured_bytes):>10}  "
        f"servers {','.join(resource.server_ids) or '-'}  leases {len(resource.lease_ids)}"
        + (f"  standby {standby}" if standby else "")
    )


def _cache(node: pb.NodeStatus) -> dict[str, object] | None:
    if not node.HasField("cache"):
        return None
    cache = node.cache
    return {
        "size_bytes": cache.size_bytes,
        "cap_bytes": cache.cap_bytes,
        "read_at": cache.read_at,
        "models": [
            {
                "name": m.name,
                "uri": m.uri,
                "bytes": m.bytes,
                "last_used": m.last_used,
                "in_use": m.in_use,
            }
            for m in cache.models
        ],
    }


def _cache_lines(cache: pb.ModelCacheStatus) -> list[str]:
    """The node cache: its fill against its cap, then each model, most recently used first."""
    now = time.time()
    lines = [
        f"  model cache {format_size(cache.size_bytes)} of {format_size(cache.cap_bytes)}, "
        f"{len(cache.models)} model(s)"
    ]
    for m in sorted(cache.models, key=lambda m: -m.last_used):
        used = format_duration(max(0.0, now - m.last_used)) + " ago"
        lines.append(
            f"    {m.name or '-':<20} {format_size(m.bytes):>10}  "
            f"{'in use' if m.in_use else 'idle':<6}  used {used:<10}  {m.uri}"
        )
    return lines


@click.command()
@output_option
@daemon_options
@pass_context
@one_line_errors
def cluster(ctx: Context, fmt: str | None) -> None:
    """Each node and GPU: memory declared and measured in use, servers and leases."""
    status = ctx.client.cluster()
    mode = ctx.mode(fmt)
    if mode == "json":
        print(
            json.dumps(
                [
                    {
                        "node": node.name,
                        "source": node.source,
                        "labels": dict(node.labels),
                        "cpu": _resource(node.cpu),
                        "gpus": [
                            {
                                "index": g.index,
                                "product": g.product,
                                "device_used_bytes": g.device_used_bytes,
                                **_resource(g.memory),
                            }
                            for g in node.gpus
                        ],
                        "cache": _cache(node),
                    }
                    for node in status.nodes
                ],
                indent=2,
            )
        )
        return
    for node in status.nodes:
        if mode == "porcelain":
            rows = [
                [
                    node.name,
                    "cpu",
                    "",
                    str(node.cpu.total_bytes),
                    str(node.cpu.declared_bytes),
                    str(node.cpu.measured_bytes),
                    ",".join(node.cpu.server_ids),
                ]
            ]
            rows += [
                [
                    node.name,
                    f"gpu-{g.index}",
                    g.product,
                    str(g.memory.total_bytes),
                    str(g.memory.declared_bytes),
                    str(g.memory.measured_bytes),
                    ",".join(g.memory.server_ids),
                ]
                for g in node.gpus
            ]
            output.print_rows(rows)
            continue
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        output.out.print(
            f"node [bold]{escape(node.name)}[/] ({node.source} GPUs)"
            + (f"  {labels}" if labels else "")
        )
        output.out.print(escape(_line("host memory (CPU servers)", node.cpu)), soft_wrap=True)
        for gpu in node.gpus:
            output.out.print(
                escape(_line(f"gpu-{gpu.index} {gpu.product}", gpu.memory)), soft_wrap=True
            )
        if node.HasField("cache"):
            for line in _cache_lines(node.cache):
                output.out.print(escape(line), soft_wrap=True)
    if mode == "human":
        output.out.print("  # declared in use   + measured beyond declared   . free")


@click.command()
@output_option
@daemon_options
@pass_context
@one_line_errors
def models(ctx: Context, fmt: str | None) -> None:
    """Every model seen: memory declared by leases against measured after loading."""
    status = ctx.client.models()
    mode = ctx.mode(fmt)
    rows = [
        {
            "name": m.name,
            "uri": m.uri,
            "framework": m.framework,
            "declared_bytes": m.declared_bytes,
            "measured_bytes": m.measured_bytes,
            "leases": list(m.lease_ids),
            "servers": list(m.server_ids),
            "cached_on": list(m.cached_on),
        }
        for m in status.models
    ]
    if mode == "json":
        print(json.dumps(rows, indent=2))
        return
    if mode == "porcelain":
        output.print_rows(
            [
                [
                    r["name"],
                    r["uri"],
                    r["framework"],
                    str(r["declared_bytes"]),
                    str(r["measured_bytes"]),
                ]
                for r in rows
            ]
        )
        return
    output.out.print(
        f"{'MODEL':<20} {'FRAMEWORK':<12} {'DECLARED':>10} {'MEASURED':>10}  LEASES  URI"
    )
    for m in status.models:
        flag = "  !" if m.declared_bytes and m.measured_bytes > m.declared_bytes else ""
        cached = f"  (cached on {', '.join(m.cached_on)})" if m.cached_on else ""
        output.out.print(
            escape(
                f"{m.name:<20} {m.framework or '-':<12} {format_size(m.declared_bytes):>10} "
                f"{format_size(m.measured_bytes):>10}  {len(m.lease_ids):>6}  {m.uri}{flag}"
                f"{cached}"
            ),
            soft_wrap=True,
        )

"""What the magics return: Python objects that also show themselves as HTML and text."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable

import numpy as np

from tms_console.fleet import Fleet, Slot
from tms_console.jupyter.lease import NotebookLease
from tms_console.testinfer import InferResult
from tms_core.api.client import TmsClient
from tms_core.units import format_duration, format_size

DECLARED_COLOR = "#4c78a8"
MEASURED_COLOR = "#54a24b"


def slot_title(slot: Slot) -> str:
    product = f" · {slot.product}" if slot.product else ""
    return f"{slot.node} {slot.label}{product}"


def slot_usage(slot: Slot) -> str:
    total = format_size(slot.total_bytes) if slot.total_bytes else "?"
    return (
        f"declared {format_size(slot.declared_bytes)} · measured "
        f"{format_size(slot.measured_bytes)} of {total}"
    )


def slot_members(slot: Slot) -> str:
    servers = (
        ", ".join(s + (" (standby)" if s in slot.standby_ids else "") for s in slot.server_ids)
        or "no servers"
    )
    leases = ", ".join(slot.lease_ids) or "no leases"
    return f"servers: {servers} · leases: {leases}"


def _bar(fraction: float, color: str) -> str:
    width = round(100 * max(0.0, min(1.0, fraction)), 1)
    return (
        "<div style='background:#e6e6e6;width:260px;height:10px;margin:2px 0'>"
        f"<div style='background:{color};width:{width}%;height:10px'></div></div>"
    )


def shown_slots(fleet: Fleet) -> list[Slot]:
    """GPUs, and host memory where CPU servers run or where a node has no GPU."""
    return [
        slot
        for node in fleet.nodes
        for slot in node.slots
        if slot.gpu is not None or slot.server_ids or slot.lease_ids or not node.gpus
    ]


class ClusterView:
    """The fleet's occupancy, as `%tms cluster` shows it; `.fleet` holds the model."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    @classmethod
    def fetch(cls, client: TmsClient) -> ClusterView:
        fleet = Fleet()
        fleet.load(client)
        return cls(fleet)

    @property
    def slots(self) -> list[Slot]:
        return shown_slots(self.fleet)

    def __repr__(self) -> str:
        if not self.slots:
            return "no nodes"
        lines = []
        for slot in self.slots:
            lines.append(f"{slot_title(slot)}: {slot_usage(slot)}")
            lines.append(f"    {slot_members(slot)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.slots:
            return "<p>no nodes</p>"
        rows = []
        for slot in self.slots:
            rows.append(
                "<tr>"
                f"<td style='text-align:left'><b>{html.escape(slot_title(slot))}</b></td>"
                f"<td>{_bar(slot.fraction(slot.declared_bytes), DECLARED_COLOR)}"
                f"{_bar(slot.fraction(slot.measured_bytes), MEASURED_COLOR)}</td>"
                f"<td style='text-align:left'>{html.escape(slot_usage(slot))}<br>"
                f"<small>{html.escape(slot_members(slot))}</small></td>"
                "</tr>"
            )
        return f"<table class='tms-cluster'>{''.join(rows)}</table>"


LEASE_COLUMNS = ("id", "name", "state", "models", "endpoint", "expires in")


def lease_cells(lease: NotebookLease, now: float) -> tuple[str, ...]:
    left = lease.expires_at - now
    expires = "-" if not lease.expires_at else (format_duration(left) if left > 0 else "expired")
    if lease.state in ("RELEASED", "EXPIRED", "FAILED"):
        expires = "-"
    return (
        lease.id,
        lease.name or "-",
        lease.state,
        ", ".join(lease.models),
        lease.endpoint or "-",
        expires,
    )


CELL_STYLE = "text-align:left;padding:2px 14px 2px 0"


def html_table(columns: Iterable[str], rows: Iterable[Iterable[str]], css_class: str) -> str:
    head = "".join(f"<th style='{CELL_STYLE}'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='{CELL_STYLE}'>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class LeaseList(list[NotebookLease]):
    """The leases of `%tms leases`: a list of lease objects that shows itself as a table."""

    def __init__(self, leases: Iterable[NotebookLease] = ()) -> None:
        super().__init__(leases)

    def __repr__(self) -> str:
        if not self:
            return "no leases"
        now = time.time()
        rows = [LEASE_COLUMNS, *(lease_cells(lease, now) for lease in self)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(LEASE_COLUMNS))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    def _repr_html_(self) -> str:
        if not self:
            return "<p>no leases</p>"
        now = time.time()
        return html_table(LEASE_COLUMNS, (lease_cells(lease, now) for lease in self), "tms-leases")


def array_text(array: np.ndarray) -> str:  # type: ignore[type-arg]
    return np.array2string(array, threshold=20, precision=4, separator=", ")


class InferView:
    """A test inference's outputs and latency (`.result` has the arrays)."""

    def __init__(self, result: InferResult) -> None:
        self.result = result

    @property
    def outputs(self) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
        return self.result.outputs

    @property
    def latency_s(self) -> float:
        return self.result.latency_s

    def _head(self) -> str:
        r = self.result
        return f"{r.model} over {r.protocol} at {r.endpoint}: {r.latency_s * 1000:.1f} ms"

    def _rows(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for kind, tensors in (("input", self.result.inputs), ("output", self.result.outputs)):
            for name, array in tensors.items():
                rows.append((kind, name, f"{array.dtype}{list(array.shape)}", array_text(array)))
        return rows

    def __repr__(self) -> str:
        lines = [self._head()]
        lines += [
            f"  {kind:<6} {name} {shape} = {value}" for kind, name, shape, value in self._rows()
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        table = html_table(("", "name", "type", "value"), self._rows(), "tms-infer")
        return f"<p>{html.escape(self._head())}</p>{table}"

"""The Jupyter extension: `%tms` magics, lease objects and ipywidgets dashboards.

Loaded with `%load_ext tms_console` (see docs/jupyter.md); only `magics` is imported then,
the widgets on first use.
"""

from __future__ import annotations

from typing import Any


def load(ipython: Any) -> None:
    from tms_console.jupyter.magics import TmsMagics

    if any(isinstance(m, TmsMagics) for m in ipython.configurables):
        return  # loaded already: keep its settings and its kernel-tied leases
    magics = TmsMagics(shell=ipython)
    ipython.register_magics(magics)


def unload(ipython: Any) -> None:
    from tms_console.jupyter.magics import TmsMagics

    for magics in [m for m in ipython.configurables if isinstance(m, TmsMagics)]:
        magics.close()  # stops live widgets; tied leases stay tied until the kernel exits

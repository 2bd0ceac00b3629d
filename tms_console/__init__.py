"""The people's side of TMS: the Textual console (`tms console`) and the Jupyter extension
(`%load_ext tms_console`). Both talk to the daemon only through `tms_core.api.client`.

Importing this package imports neither Textual nor IPython: the extension's entry points
below import the notebook code only when IPython calls them.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext tms_console`: registers `%tms` and `%%tms` (docs/jupyter.md)."""
    from tms_console.jupyter import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from tms_console.jupyter import unload

    unload(ipython)

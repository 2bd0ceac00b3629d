"""The people's side of TMS: the Textual console (`tms console`) and the Jupyter extension
(`%load_ext tms_console`). Both talk to the daemon only through `tms_core.api.client`.

Not built yet: the foundation ships the `tms` CLI; the console and the notebook magics are
tracked as their own issues.
"""

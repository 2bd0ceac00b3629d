"""The `tms` command (also installed as `tmsctl`)."""

"""The Textual console, `tms console`: see docs/console.md."""

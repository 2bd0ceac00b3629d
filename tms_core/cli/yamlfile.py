"""Reading the YAML files people write for the CLI, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml


def load_yaml(path: Path) -> Any:
    """The parsed document; `FileNotFoundError` passes through, bad YAML is a `ValueError`."""
    text = path.read_text()
    # Imported here: most commands read no YAML, and yaml's import is a tenth of a short
    # command's start.
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {_problem(exc)}") from None


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    if not problem:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)

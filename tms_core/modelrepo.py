"""Checks of a model's repository URI made when a lease is requested, so that a typo, a
missing object or a refused credential is a one-line error to the caller rather than a failed
lease a few seconds later."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlparse

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tms_core.errors import InvalidArgument
from tms_core.repos.fetcher import Repositories, split_spec
from tms_core.repos.policy import RepositoryError
from tms_core.repos.sources import SCHEMES

SUPPORTED_SCHEMES = tuple(SCHEMES)


def local_path(uri: str) -> Path | None:
    """The directory a `file://` URI (or a plain absolute path) names; None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    return None


# Triton's platform names, by the framework (backend) that runs them.
_PLATFORMS = {
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
}


def framework_of(config: model_config_pb2.ModelConfig) -> str:
    """The framework a model runs on, from its config's `backend` or `platform`."""
    if config.backend:
        return str(config.backend).lower()
    platform = str(config.platform).lower()
    return _PLATFORMS.get(platform, platform)


def check_model(field: str, name: str, uri: str, repos: Repositories | None = None) -> str:
    """Raises InvalidArgument naming `field` if the model at `uri` cannot be loaded by name
    or is outside what `repos` allows; returns its framework ("" when its config does not
    say, or the model is remote: its presence is `check_present`'s)."""
    parsed = urlparse(uri)
    try:
        base, _ = split_spec(uri)
        if repos is not None:
            repos.policy.check_allowed(base)
    except RepositoryError as exc:
        raise InvalidArgument(f"{field}.uri", f"model {name!r}: {exc}") from None
    if parsed.scheme in SUPPORTED_SCHEMES and parsed.scheme != "file":
        return ""
    path = local_path(base)
    if path is not None and path.is_file():
        return ""  # an archive or a single file, unpacked by the sidecar
    if path is None:
        scheme = parsed.scheme or "(none)"
        raise InvalidArgument(
            f"{field}.uri",
            f"scheme {scheme!r} is not supported; expected one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)} followed by an absolute path",
        )
    if not path.is_dir():
        raise InvalidArgument(f"{field}.uri", f"model directory {path} does not exist")
    config = path / "config.pbtxt"
    framework = ""
    if config.exists():
        try:
            parsed_config = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
        except text_format.ParseError as exc:
            # The parser's message repeats the whole offending line; keep its position and
            # its complaint.
            problem = str(exc).rsplit("': ", 1)[-1] if "': " in str(exc) else str(exc)
            where = f" at line {exc.GetLine()} column {exc.GetColumn()}" if exc.GetLine() else ""
            raise InvalidArgument(
                f"{field}.uri", f"{config} is malformed{where}: {problem}"
            ) from None
        if parsed_config.name and parsed_config.name != name:
            raise InvalidArgument(
                f"{field}.name",
                f"{name!r} does not match the name {parsed_config.name!r} in {config}",
            )
        framework = framework_of(parsed_config)
    if not any(child.is_dir() and child.name.isdigit() for child in path.iterdir()):
        raise InvalidArgument(
            f"{field}.uri", f"{path} has no numbered version directory (such as {path}/1)"
        )
    return framework


async def check_present(field: str, name: str, uri: str, repos: Repositories) -> None:
    """Raises InvalidArgument naming `field` and the model unless the remote model at `uri`
    exists and is readable (local paths were checked by `check_model`)."""
    if urlparse(uri).scheme in ("", "file"):
        return
    try:
        await asyncio.to_thread(repos.stat, uri)
    except RepositoryError as exc:
        raise InvalidArgument(f"{field}.uri", f"model {name!r}: {exc}") from None

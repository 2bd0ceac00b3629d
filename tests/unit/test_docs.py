"""The docs cover what exists: every setting and every RPC is documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from tms_core.api import tms_pb2 as pb
from tms_core.config import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def settings_keys() -> list[str]:
    keys = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        keys.extend(f"{section}.{name}" for name in model.model_fields)
    return keys


@pytest.mark.parametrize("key", settings_keys())
def test_every_setting_is_documented(key: str) -> None:
    assert f"`{key}`" in (DOCS / "configuration.md").read_text(), (
        f"{key} is missing from docs/configuration.md"
    )


def rpcs() -> list[str]:
    return [
        f"{service.name}.{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


@pytest.mark.parametrize("rpc", rpcs())
def test_every_rpc_is_documented(rpc: str) -> None:
    service, method = rpc.split(".")
    text = (DOCS / "api.md").read_text()
    assert f"`{service}`" in text, f"service {service} is missing from docs/api.md"
    assert f"`{method}" in text, f"{rpc} is missing from docs/api.md"

"""The part of the Prometheus Operator's `monitoring.coreos.com/v1` CRD schemas (ServiceMonitor,
PodMonitor, v0.76) that the manifests use, for validating them offline like core objects: the
core schemas do not know these kinds. Unknown fields are refused, as the API server's
structural schemas prune them silently (a typo would scrape nothing, with no error)."""

from __future__ import annotations

from typing import Any

# The operator's `monitoringv1.Duration` pattern.
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
DNS_1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

ENDPOINT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https"]},
        "interval": {"type": "string", "pattern": DURATION},
        "scrapeTimeout": {"type": "string", "pattern": DURATION},
        "honorLabels": {"type": "boolean"},
    },
}

NAMESPACE_SELECTOR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
}


def _kind(kind: str, endpoints: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "pattern": DNS_1123}},
            },
            "spec": {
                "type": "object",
                "required": ["selector", endpoints],
                "additionalProperties": False,
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": NAMESPACE_SELECTOR,
                    "jobLabel": {"type": "string"},
                    endpoints: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


SCHEMAS = {
    "ServiceMonitor": _kind("ServiceMonitor", "endpoints"),
    "PodMonitor": _kind("PodMonitor", "podMetricsEndpoints"),
}

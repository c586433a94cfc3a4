"""What the dashboard and the alert rules may query: the series lkps/metrics.py exports,
with their labels, and a check of PromQL text against them."""

from __future__ import annotations

import re
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

import lkps.metrics

# Labels Prometheus adds to every scraped series, and the histogram buckets' label.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}

_SERIES = re.compile(r"\b(lkps_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported_series(module: ModuleType = lkps.metrics) -> dict[str, frozenset[str]]:
    """Every series name the module's metrics expose, with the labels each carries."""
    series: dict[str, frozenset[str]] = {}
    for value in vars(module).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = frozenset(value._labelnames)
        for suffix in SUFFIXES[str(value._type)]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[value._name + suffix] = labels | extra
    return series


def problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What in `expr` is not exported: unknown series, and labels (matched or grouped
    by) that none of its series carries."""
    found = []
    used: set[str] = set()
    for name, matchers in _SERIES.findall(expr):
        if name not in series:
            found.append(f"{name}: no such metric in lkps/metrics.py")
            continue
        used.add(name)
        for label in _MATCHER.findall(matchers):
            if label not in series[name] | TARGET_LABELS:
                found.append(f"{name}: no label {label!r}")
    known = set(TARGET_LABELS).union(*(series[name] for name in used))
    for grouping in _GROUPING.findall(expr):
        for label in (part.strip() for part in grouping.split(",")):
            if label and label not in known:
                found.append(f"grouped by {label!r}, which none of its metrics carries")
    if not _SERIES.search(expr):
        found.append("queries no LKPS metric")
    return found

"""Summaries of py-spy's raw (collapsed-stack) output: where the sampled CPU time went."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["path"]


def package_of(path: str) -> str:
    """`sqlalchemy`, `lkps`, `stdlib asyncio`, ... for a source path."""
    if "site-packages/" in path:
        top = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return top.removesuffix(".py")
    if "/src/lkps/" in path:
        return "lkps"
    if "/src/lkps_testkit/" in path:
        return "lkps_testkit"
    match = re.search(r"/lib/python3\.\d+/(.+)", path)
    if match:
        return "stdlib " + match[1].split("/", 1)[0].removesuffix(".py")
    return path or "?"


def short(function: str, path: str) -> str:
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/src/" in path:
        path = path.split("/src/", 1)[1]
    else:
        path = re.sub(r".*/lib/python3\.\d+/", "", path)
    return f"{function} ({path})" if path else function


def summarize(
    raw: Path, only_processes: Collection[int] | None = None, top: int = 25
) -> dict[str, Any]:
    """Self time by function and by package, inclusive time of every function (leaving
    out the frames nearly every stack shares) and of LKPS's own functions, as
    percentages of all samples; with `only_processes` (the workers), stacks of other
    processes (supervisors) are left out."""
    self_time: Counter[str] = Counter()
    package_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    lkps_inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        owners = [p for p in parts if p.startswith("process ")]
        if only_processes is not None and owners:
            owner = owners[-1].removeprefix("process ").split(":", 1)[0]
            if not owner.isdigit() or int(owner) not in only_processes:
                continue
        frames = [_parse(p) for p in parts if not p.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        function, path = frames[-1]
        self_time[short(function, path)] += count
        package_time[package_of(path)] += count
        names = {short(f, p) for f, p in frames}
        for name in names:
            inclusive[name] += count
        for name in {short(f, p) for f, p in frames if package_of(p) == "lkps"}:
            lkps_inclusive[name] += count

    def percent(counter: Counter[str], limit: int, below: float = 101.0) -> list[tuple[str, float]]:
        rows = [(name, round(100 * n / total, 1)) for name, n in counter.most_common()]
        return [row for row in rows if row[1] < below][:limit]

    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self_by_package": percent(package_time, 15),
        "self_by_function": percent(self_time, top),
        "inclusive": percent(inclusive, 60, below=90.0),
        "lkps_inclusive": percent(lkps_inclusive, top),
    }


def as_text(summary: dict[str, Any]) -> str:
    lines = [
        f"samples: {summary['samples']} (threads running or runnable, all workers; "
        "Condition.wait / Queue.get leaves are worker threads woken for a hand-off, "
        "waiting for a CPU or the GIL)"
    ]
    for key, title in (
        ("self_by_package", "self time by package"),
        ("self_by_function", "self time by function"),
        ("lkps_inclusive", "inclusive time of LKPS functions"),
        ("inclusive", "inclusive time, all functions (those in >= 90% of samples left out)"),
    ):
        lines += ["", f"{title}:"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary.get(key, [])]
    return "\n".join(lines) + "\n"


def py_spy_record(spy: str, pid: int, seconds: float, output: Path) -> list[str]:
    """The py-spy command both benchmarks record with: `pid` and its worker processes,
    sampled without pausing them, as raw collapsed stacks for `summarize`."""
    return [
        spy,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--duration",
        str(max(1, int(seconds) - 4)),
        "--rate",
        "100",
        "--nonblocking",
        "--full-filenames",
        "--nolineno",
        "--format",
        "raw",
        "--output",
        str(output),
    ]

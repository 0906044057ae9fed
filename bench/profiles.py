"""Summarise a py-spy speedscope profile: the functions where the samples are, self and total.

python -m bench.profiles FILE.speedscope.json [--top 25] [--thread MainThread]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def _short(file: str) -> str:
    """Parent folder and name: tells paho's client.py from aiomqtt's."""
    path = Path(file)
    return f"{path.parent.name}/{path.name}"


CATEGORIES = (
    ("/gateway/", "", "gateway code"),
    ("bench/baselines", "", "naive bridge code"),
    ("/paho/", "", "paho-mqtt"),
    ("/aiomqtt/", "", "aiomqtt"),
    ("/aiohttp/", "", "aiohttp"),
    ("selector_events", "write", "socket writes (transport.write)"),
    ("timeouts.py", "", "asyncio.timeout"),
    ("/json/", "", "json (stdlib)"),
    ("asyncio", "", "asyncio loop, tasks, futures"),
    ("selectors.py", "", "asyncio loop, tasks, futures"),
)


def category(frame: dict[str, Any]) -> str:
    """Which layer a leaf frame belongs to (first match in CATEGORIES)."""
    file, name = frame.get("file", ""), frame.get("name", "")
    for part, suffix, label in CATEGORIES:
        if part in file and name.endswith(suffix):
            return label
    return "other"


def summarize(path: Path, top: int = 25, thread: str | None = None) -> str:
    data: dict[str, Any] = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    names = [f"{f['name']} ({_short(f.get('file', '?'))}:{f.get('line', '?')})" for f in frames]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    samples = 0.0
    for profile in data["profiles"]:
        if thread and thread not in profile.get("name", ""):
            continue
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            samples += weight
            if stack:
                own[names[stack[-1]]] += weight
                layers[category(frames[stack[-1]])] += weight
            for name in {names[i] for i in stack}:
                total[name] += weight
    lines = [f"{path.name}: % of the samples py-spy took", "", "| self % | layer |", "|---:|---|"]
    for label, weight in layers.most_common():
        lines.append(f"| {100 * weight / samples:.1f} | {label} |")
    lines += ["", "| self % | total % | function |"]
    lines.append("|---:|---:|---|")
    for name, weight in own.most_common(top):
        pct = 100 * weight / samples
        lines.append(f"| {pct:.1f} | {100 * total[name] / samples:.1f} | `{name}` |")
    by_file: Counter[str] = Counter()
    for name, weight in own.items():
        by_file[name.rsplit("(", 1)[1].split(":")[0]] += weight
    lines += ["", "| self % | file |", "|---:|---|"]
    for file, weight in by_file.most_common(top):
        lines.append(f"| {100 * weight / samples:.1f} | `{file}` |")
    lines += ["", "| total % | function (inclusive) |", "|---:|---|"]
    for name, weight in total.most_common(top):
        lines.append(f"| {100 * weight / samples:.1f} | `{name}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread")
    args = parser.parse_args()
    print(summarize(args.file, args.top, args.thread))


if __name__ == "__main__":
    main()

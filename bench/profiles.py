"""Summarise a py-spy speedscope profile: the functions where the samples are, self and total.

python -m bench.profiles FILE.speedscope.json [--top 25] [--thread MainThread]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def summarize(path: Path, top: int = 25, thread: str | None = None) -> str:
    data: dict[str, Any] = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    names = [f"{f['name']} ({Path(f.get('file', '?')).name}:{f.get('line', '?')})" for f in frames]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0.0
    for profile in data["profiles"]:
        if thread and thread not in profile.get("name", ""):
            continue
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            samples += weight
            if stack:
                own[names[stack[-1]]] += weight
            for name in {names[i] for i in stack}:
                total[name] += weight
    lines = [f"{samples:.0f} samples in {path.name}", "", "| self % | total % | function |"]
    lines.append("|---:|---:|---|")
    for name, weight in own.most_common(top):
        pct = 100 * weight / samples
        lines.append(f"| {pct:.1f} | {100 * total[name] / samples:.1f} | `{name}` |")
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

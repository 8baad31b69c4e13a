"""How the observer's readings of the wild corpus hold when the same excerpts reach a person
another way: each artifact below is applied to every excerpt the observer reads right as posted
(the baseline, measured in the same run), and the readings it keeps are counted. Prints JSON.

An artifact is what a collector, a page or a viewer does to every line (a compose or kubectl
prefix, a Markdown quote or code block, journald's prefix, a shipper's ISO time, HTML escaping,
a log viewer that cuts long lines), never one log's wording. A reading is kept when the primary
finding keeps its kind (for a look-alike: when it stays silent). Some excerpts were already
re-wrapped or cut by their posters, so a second artifact on top can cost a few of them.

    python bench/wild_artifacts.py            # every artifact (about a minute on 2 cores)
    python bench/wild_artifacts.py --quick    # every third excerpt
"""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from selfheal.handlers.observer import diagnose  # noqa: E402
from wild import excerpts  # noqa: E402


def _per_line(f):
    return lambda text: "\n".join(f(i, line) for i, line in enumerate(text.split("\n")))


_STAMP = re.compile(r"\d\d:\d\d:\d\d")
#: a memory figure, as a person sets it in bold in notes that retell a log
_SIZE = re.compile(r"(?<![\w.*-])-?\d+(?:\.\d+)? ?(?:bytes|[KMGT]i?B)(?![\w*])")


def _newest_first(text: str) -> str:
    """A log viewer's order: records (a line with a time and the untimed lines after it) reversed."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if _STAMP.search(line)]
    # records within one second have no order a viewer could show: such an excerpt stays as it is
    if len({_STAMP.search(lines[i]).group() for i in starts}) < 4:
        return text
    records = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    return "\n".join(lines[:starts[0]] + [line for r in reversed(records) for line in r])


#: what a page, a chat client, a collector or a viewer does to every line, and undoes nothing of
#: vLLM's words: a reading should survive each (tests/observer/test_observer_paste.py holds it to that)
ARTIFACTS = {
    "no-break spaces": lambda t: t.replace(" ", "\u00a0"),
    "curly quotes": lambda t: t.replace('"', "\u201c").replace("'", "\u2019"),
    "full-width brackets and colons": lambda t: t.replace("(", "\uff08").replace(")", "\uff09").replace(":", "\uff1a"),
    "zero-width characters": lambda t: t.replace("GiB", "Gi\u200bB").replace("memory", "mem\u200bory"),
    "HTML escaped": lambda t: html.escape(t, quote=True),
    "CRLF line ends": lambda t: t.replace("\n", "\r\n"),
    "docker json-file": _per_line(lambda i, line: json.dumps({"log": line + "\n", "stream": "stderr",
                                                             "time": "2024-05-01T10:00:00.123456789Z"})),
    "GCP jsonPayload lines": _per_line(lambda i, line: json.dumps({"jsonPayload": {"message": line},
                                                                   "severity": "ERROR"})),
    "one JSON string with escaped newlines": lambda t: json.dumps({"error": t})[10:-1],
    "double spaced": lambda t: t.replace("\n", "\n\n"),
    "Markdown quote": _per_line(lambda i, line: "> " + line),
    "Markdown code block (indented)": _per_line(lambda i, line: "    " + line if line.strip() else line),
    "tab-indented": _per_line(lambda i, line: "\t" + line if line.strip() else line),
    "pastebin line numbers": _per_line(lambda i, line: f"{i + 1:>3} | {line}"),
    "compose prefix": _per_line(lambda i, line: "vllm-1  | " + line),
    "kubectl prefix": _per_line(lambda i, line: "[pod/vllm-7d9f/vllm] " + line),
    "kubectl --timestamps": _per_line(lambda i, line: f"2025-03-01T12:00:{i % 60:02d}.123456789Z " + line),
    "journald prefix": _per_line(lambda i, line: f"Mar 01 12:00:{i % 60:02d} gpu-host vllm[4321]: " + line),
    "newest first": _newest_first,
    "Markdown bold figures": lambda t: _SIZE.sub(r"**\g<0>**", t),
    "cat -n line numbers": _per_line(lambda i, line: f"{i + 1:6d}\t{line}"),
    "ts timestamps": _per_line(lambda i, line: f"Dec 07 15:00:{i % 60:02d} " + line),
    "Python logging's asctime": _per_line(lambda i, line: f"2025-03-01 12:00:{i % 60:02d},123 " + line),
    "ANSI colours": _per_line(lambda i, line: f"\x1b[0;36m{line}\x1b[0;0m"),
    "ANSI colours, their ESC lost": _per_line(lambda i, line: f"[0;36m{line}[0;0m"),
    "HTML line breaks (a table cell)": lambda t: t.replace("\n", "<br>"),
}
#: what takes words away: a viewer that cuts long lines (a reading cut before the words that state
#: a failure is lost, so these are measured, not held to a floor)
CUTS = {
    "lines cut at 240 characters": _per_line(lambda i, line: line[:240]),
    "lines cut at 160 characters": _per_line(lambda i, line: line[:160]),
}


def _kind(text: str) -> str | None:
    primary = diagnose(text).primary
    return primary.kind if primary else None


def measure(step: int = 1) -> dict:
    rows = excerpts()[::step]
    # the baseline: the readings that are right as posted
    right = [(name, text, labels["kind"]) for name, text, labels in rows
             if (_kind(text) or "none") == labels["kind"]]
    out = {"excerpts": len(rows), "right_as_posted": len(right), "artifacts": {}}
    for artifact, make in (ARTIFACTS | CUTS).items():
        lost = [name for name, text, kind in right if (_kind(make(text)) or "none") != kind]
        spoke = [name for name in lost if name.startswith("none/")]
        out["artifacts"][artifact] = {"kept": round(1 - len(lost) / len(right), 4), "lost": len(lost),
                                      "look_alikes_that_spoke": len(spoke), "lost_excerpts": lost}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every third excerpt")
    args = parser.parse_args(argv)
    print(json.dumps(measure(3 if args.quick else 1), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

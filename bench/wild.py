"""Score the observer on real vLLM log excerpts from public threads (tests/observer/samples/wild/).

Each excerpt is a `.log` (the lines as posted) beside a `.toml` of labels written from what the
thread shows: `kind` (a finding kind, or "none" for a look-alike that is no failure), the
`numbers` the excerpt prints, the fix `direction` ({} where no tunable setting helps), its
`categories` (how the log reached the person: prefix, abridged, raise_site, accounting,
truncated, runtime, wording, plain) and its `source` address. Prints one JSON object:

- kind: the primary finding's kind is the label's, over every failure excerpt;
- numbers: over excerpts with labelled numbers, the kind is right and every labelled number
  is in the finding's numbers (within 1%, or 0.01 for values near zero: printed GiB are rounded);
- direction: over failure excerpts, the finding moves one of the label's parameters the label's
  way and none the other way; for a label of {} the finding does not tune;
- negatives_silent: look-alikes with no finding at all;
- wrong_way: findings whose fix moves a labelled parameter against the label;
- crashes: excerpts the observer raised on.

    python bench/wild.py            # the whole corpus, with every miss listed
    python bench/wild.py --quick    # the same (the corpus is small); for bench/all.py

There is no baseline to compare against here: the figures are accuracies, not timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfheal.handlers.observer import diagnose  # noqa: E402

WILD = ROOT / "tests" / "observer" / "samples" / "wild"
LABEL_KEYS = ("source", "vllm_version", "kind", "categories", "direction", "numbers", "note")
OPPOSITE = {"increase": "decrease", "decrease": "increase"}


class LabelError(ValueError):
    """A label file that does not say what the scorer needs; names the file."""


def excerpts(root: Path = WILD) -> list[tuple[str, str, dict]]:
    """(name, log text, labels) for every labelled excerpt under `root`, in name order."""
    out = []
    for labels_path in sorted(root.glob("*/*.toml")):
        log_path = labels_path.with_suffix(".log")
        name = f"{labels_path.parent.name}/{labels_path.stem}"
        try:
            labels = tomllib.loads(labels_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise LabelError(f"{labels_path}: {exc}") from None
        missing = [k for k in LABEL_KEYS if k not in labels]
        if missing or not log_path.is_file():
            raise LabelError(f"{labels_path}: missing {', '.join(missing) or log_path.name}")
        if labels["kind"] != labels_path.parent.name:
            raise LabelError(f"{labels_path}: kind {labels['kind']!r} is not its folder's")
        out.append((name, log_path.read_bytes().decode("utf-8", "replace"), labels))
    return out


def _close(got, want) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got == want
    return isinstance(got, (int, float)) and abs(got - want) <= max(0.01 * abs(want), 0.01)


def judge(text: str, labels: dict) -> dict:
    """What the observer says of one excerpt, against its labels."""
    try:
        d = diagnose(text)
    except Exception as exc:  # noqa: BLE001 - a crash is a result here
        return {"crash": f"{type(exc).__name__}: {exc}"}
    f = d.primary
    out = {"kind": f.kind if f else None, "confidence": f.confidence if f else None,
           "findings": len(d.findings)}
    want = labels["direction"]
    if f is None:
        return out | {"numbers_ok": False, "direction_ok": False, "wrong_way": False}
    out["numbers_ok"] = f.kind == labels["kind"] and all(
        _close(f.numbers.get(k), v) for k, v in labels["numbers"].items())
    out["numbers_missed"] = {k: [v, f.numbers.get(k)] for k, v in labels["numbers"].items()
                             if not _close(f.numbers.get(k), v)}
    moves = f.fix_direction
    out["wrong_way"] = any(p in moves and moves[p] == OPPOSITE.get(w) for p, w in want.items())
    if want:  # the label names the ways the thread or the error shows; one of them is enough
        out["direction_ok"] = any(moves.get(p) == w for p, w in want.items()) and not out["wrong_way"]
    else:
        out["direction_ok"] = f.action != "tune"
    return out


def score(root: Path = WILD) -> dict:
    results = []
    for name, text, labels in excerpts(root):
        results.append((name, labels, judge(text, labels)))
    failures = [(n, lab, r) for n, lab, r in results if lab["kind"] != "none"]
    negatives = [(n, lab, r) for n, lab, r in results if lab["kind"] == "none"]
    with_numbers = [(n, lab, r) for n, lab, r in failures if lab["numbers"]]

    def share(rows, ok) -> float:
        return round(sum(1 for row in rows if ok(row)) / len(rows), 4) if rows else 1.0

    by_kind: dict[str, Counter] = defaultdict(Counter)
    by_category: dict[str, Counter] = defaultdict(Counter)
    for _, lab, r in results:
        right = (r.get("kind") == lab["kind"]) if lab["kind"] != "none" else (r.get("findings") == 0)
        by_kind[lab["kind"]]["excerpts"] += 1
        by_kind[lab["kind"]]["right"] += right
        for cat in lab["categories"]:
            by_category[cat]["excerpts"] += 1
            by_category[cat]["right"] += right
    misses = []
    for n, lab, r in results:
        if "crash" in r:
            misses.append({"excerpt": n, "crash": r["crash"]})
        elif lab["kind"] == "none":
            if r["findings"]:
                misses.append({"excerpt": n, "want": "none", "got": r["kind"], "confidence": r["confidence"],
                               "findings": r["findings"]})
        elif r["kind"] != lab["kind"] or not r["numbers_ok"] and lab["numbers"] or not r["direction_ok"]:
            misses.append({"excerpt": n, "want": lab["kind"], "got": r["kind"], "numbers": r.get("numbers_missed"),
                           "direction_ok": r["direction_ok"], "want_direction": lab["direction"]})
    return {
        "what": "the observer on real vLLM log excerpts from public threads, labelled from the threads",
        "excerpts": len(results), "failures": len(failures), "negatives": len(negatives),
        "kind": share(failures, lambda x: x[2].get("kind") == x[1]["kind"]),
        "numbers": share(with_numbers, lambda x: x[2].get("numbers_ok", False)),
        "direction": share(failures, lambda x: x[2].get("direction_ok", False)),
        "negatives_silent": share(negatives, lambda x: x[2].get("findings") == 0),
        "wrong_way": sum(1 for _, _, r in results if r.get("wrong_way")),
        "crashes": sum(1 for _, _, r in results if "crash" in r),
        "confidence": dict(Counter(r.get("confidence") for _, lab, r in failures if r.get("kind") == lab["kind"])),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_category": {k: dict(v) for k, v in sorted(by_category.items())},
        "misses": misses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the same run (the corpus is small)")
    parser.add_argument("--root", type=Path, default=WILD, help="a corpus folder of the same layout")
    args = parser.parse_args(argv)
    print(json.dumps(score(args.root), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

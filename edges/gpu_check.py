"""`python -m selfheal.edges.gpu_check [INDEX ...]`: print what NvmlInventory reads here, as JSON.

For recording what a real GPU machine shows (fixtures, bug reports). Exit 0 with the snapshot on
stdout, or exit 1 with the InventoryUnavailable message on stderr, so a script can tell them apart.
"""
from __future__ import annotations

import sys

import msgspec

from selfheal.handlers.ports import InventoryUnavailable
from selfheal.edges.nvml import NvmlInventory


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        indices = [int(a) for a in args] or None
        snapshot = NvmlInventory(indices).snapshot()
    except ValueError as exc:
        print(f"usage: python -m selfheal.edges.gpu_check [GPU_INDEX ...] ({exc})", file=sys.stderr)
        return 2
    except InventoryUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(snapshot), indent=2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

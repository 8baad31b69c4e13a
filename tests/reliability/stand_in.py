"""A stand-in for `vllm serve` that records how it was started, for the reliability tests.

It appends one JSON line to the file named by $STANDIN_RECORD: its argv (exactly as received),
its pid and the canary marker in its environment. Then, with $STANDIN_EXEC=1, it becomes the
rest of its arguments (os.execv, same pid: e.g. the fake vLLM server); otherwise it prints a
line and exits 1, as a server that refuses to start does.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys


def main() -> None:
    record = {"argv": sys.argv, "pid": os.getpid(), "canary_id": os.environ.get("SELFHEAL_CANARY_ID")}
    with open(os.environ["STANDIN_RECORD"], "a", encoding="utf-8") as out:
        fcntl.flock(out, fcntl.LOCK_EX)  # several canaries may start at once
        out.write(json.dumps(record) + "\n")
    if os.environ.get("STANDIN_EXEC") == "1":
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    print("stand-in: refusing to start (this is a test)", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()

"""HostMemoryInventory: real /proc on this machine, and /proc-shaped files where exact numbers matter."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from selfheal.edges.host_memory import HostMemoryInventory
from selfheal.handlers.ports import GpuInventory, InventoryUnavailable

KIB = 1024

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        22697604 kB
MemAvailable:   24022628 kB
Buffers:           37076 kB
Cached:          1429188 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def fake_proc(root, pid, cmdline: list[str], rss_kb: int | None, comm: str):
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
    rss = f"VmRSS:\t{rss_kb:>8} kB\n" if rss_kb is not None else ""
    (d / "status").write_text(f"Name:\t{comm}\nState:\tS (sleeping)\nVmPeak:\t  999999 kB\n{rss}Threads:\t4\n")
    (d / "comm").write_text(comm + "\n")


def test_real_proc_on_this_machine():
    inv = HostMemoryInventory()
    assert isinstance(inv, GpuInventory)
    [m] = inv.snapshot()
    assert (m.index, m.name, m.source) == (0, "host memory (cpu)", "host")
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 64 * (1 << 20) < m.total_bytes <= physical  # a container's meminfo may show less, never more
    assert 0 < m.free_bytes <= m.total_bytes and m.used_bytes == m.total_bytes - m.free_bytes
    assert all(p.pid != os.getpid() for p in m.processes)


def test_fake_meminfo_exact_bytes(tmp_path):
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "proc").mkdir()
    [m] = HostMemoryInventory(str(tmp_path / "meminfo"), str(tmp_path / "proc")).snapshot()
    assert m.total_bytes == 24684084 * KIB == 25276502016
    assert m.free_bytes == 24022628 * KIB  # MemAvailable, not MemFree
    assert m.used_bytes == (24684084 - 24022628) * KIB and m.processes == []


def test_fake_proc_tree_matches_cmdline(tmp_path):
    (tmp_path / "meminfo").write_text(MEMINFO)
    proc = tmp_path / "proc"
    fake_proc(proc, 4100, ["/usr/bin/python3", "/usr/local/bin/vllm", "serve", "Qwen/Qwen2.5-7B"], 3_145_728, "vllm")
    fake_proc(proc, 4200, ["VLLM::EngineCore"], 9_437_184, "VLLM::EngineCor")
    fake_proc(proc, 4300, ["/usr/sbin/sshd", "-D"], 8_000, "sshd")
    fake_proc(proc, 4400, ["vllm-zombie"], None, "vllm")  # no VmRSS: a zombie holds nothing
    (proc / "self").mkdir()  # non-numeric entries are not processes
    [m] = HostMemoryInventory(str(tmp_path / "meminfo"), str(proc)).snapshot()
    assert [(p.pid, p.name, p.used_bytes) for p in m.processes] == [
        (4100, "vllm", 3_145_728 * KIB), (4200, "VLLM::EngineCor", 9_437_184 * KIB)]


@pytest.mark.parametrize("text,problem", [
    ("MemTotal:       24684084 kB\nMemFree:        22697604 kB\n", "no MemAvailable line"),
    ("MemTotal:       lots kB\nMemAvailable:   24022628 kB\n", "malformed MemTotal line 'MemTotal:       lots kB'"),
    ("MemTotal:       24684084 MB\nMemAvailable:   24022628 kB\n", "malformed MemTotal line"),
    ("", "no MemTotal line"),
    ("MemTotal:       100 kB\nMemAvailable:   200 kB\n", "implausible MemTotal 102400 B with MemAvailable 204800 B"),
], ids=["no-available", "not-a-number", "unknown-unit", "empty", "available-above-total"])
def test_malformed_meminfo(tmp_path, text, problem):
    path = tmp_path / "meminfo"
    path.write_text(text)
    with pytest.raises(InventoryUnavailable) as info:
        HostMemoryInventory(str(path), str(tmp_path)).snapshot()
    assert info.value.source == "host" and str(path) in info.value.reason and problem in info.value.reason


def test_missing_meminfo(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(InventoryUnavailable) as info:
        HostMemoryInventory(str(path)).snapshot()
    assert info.value.reason == f"{path}: cannot be read (No such file or directory)"
    assert info.value.source == "host"


def test_real_child_process_is_found_with_its_rss():
    marker = f"vllm-marker-{uuid.uuid4().hex[:8]}"  # unique, so parallel test runs do not see each other
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        # Popen can return before /proc shows the new command line (it reads empty for an instant
        # here), so look again until the child is there, as a real caller's next snapshot would.
        deadline = time.monotonic() + 10
        while not (found := HostMemoryInventory(process_match=(marker,)).snapshot()[0].processes):
            assert time.monotonic() < deadline, f"child {child.pid} never showed up in /proc"
            time.sleep(0.01)
        [p] = found
        assert p.pid == child.pid and p.used_bytes > 0 and p.name
        # The default pattern finds it too: its command line says vllm.
        assert child.pid in [q.pid for q in HostMemoryInventory().snapshot()[0].processes]
    finally:
        child.kill()
        child.wait(timeout=10)

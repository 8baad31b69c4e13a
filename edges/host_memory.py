"""Host memory as an inventory, for deployments on vLLM's CPU backend (MISSION §4).

The CPU backend keeps its KV cache in host memory, sized by `VLLM_CPU_KVCACHE_SPACE`,
`--kv-cache-memory-bytes`, or `gpu_memory_utilization` times the node's memory less the
process's own resident memory. So the "device" pre-flight checks is the node's RAM: total is
MemTotal (the figure vLLM multiplies), free is MemAvailable (what can be had without swapping,
page cache included, unlike MemFree), and the tenants are the vLLM processes already resident.

Like the NVML reader it answers with real numbers or raises `InventoryUnavailable`; a meminfo
that cannot be read or parsed never becomes a guessed total.
"""
from __future__ import annotations

import os
from pathlib import Path

from selfheal.handlers.ports import InventoryUnavailable
from selfheal.schemas.events import GpuProcess, GpuSnapshot

_UNITS = {"kB": 1024, "": 1}  # /proc says kB and means KiB


def _kib_field(path: Path, text: str, key: str) -> int:
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if name.strip() != key:
            continue
        parts = rest.split()
        unit = parts[1] if len(parts) > 1 else ""
        if not sep or len(parts) not in (1, 2) or not parts[0].isdigit() or unit not in _UNITS:
            raise InventoryUnavailable(f"{path}: malformed {key} line {line.strip()!r} "
                                       "(expected '<key>: <number> kB')", source="host")
        return int(parts[0]) * _UNITS[unit]
    raise InventoryUnavailable(f"{path}: no {key} line (MemAvailable needs Linux 3.14 or later)", source="host")


class HostMemoryInventory:
    source = "host"

    def __init__(self, meminfo_path: str = "/proc/meminfo", proc_root: str = "/proc",
                 process_match: tuple[str, ...] = ("vllm",)):
        self.meminfo_path = Path(meminfo_path)
        self.proc_root = Path(proc_root)
        # vLLM's engine process retitles itself "VLLM::EngineCore", so matching ignores case.
        self.process_match = tuple(p.lower() for p in process_match)

    def snapshot(self) -> list[GpuSnapshot]:
        try:
            text = self.meminfo_path.read_text()
        except OSError as exc:
            raise InventoryUnavailable(f"{self.meminfo_path}: cannot be read ({exc.strerror or exc})",
                                       source="host") from exc
        total = _kib_field(self.meminfo_path, text, "MemTotal")
        free = _kib_field(self.meminfo_path, text, "MemAvailable")
        if total <= 0 or free > total:
            raise InventoryUnavailable(f"{self.meminfo_path}: implausible MemTotal {total} B with "
                                       f"MemAvailable {free} B", source="host")
        return [GpuSnapshot(index=0, name="host memory (cpu)", total_bytes=total, used_bytes=total - free,
                            free_bytes=free, processes=self._processes(), source=self.source)]

    def _processes(self) -> list[GpuProcess]:
        out = []
        me = os.getpid()  # the reader is not a tenant, whatever its command line says
        try:
            entries = [e for e in self.proc_root.iterdir() if e.name.isdigit()]
        except OSError:
            return out
        for entry in entries:
            pid = int(entry.name)
            if pid == me:
                continue
            try:
                # Processes come and go while we look; one that vanished is simply not a tenant.
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                if not cmdline or not any(p in cmdline.lower() for p in self.process_match):
                    continue
                status = (entry / "status").read_text()
                rss = next((line.split()[1:3] for line in status.splitlines() if line.startswith("VmRSS:")), None)
                if not rss:
                    continue  # a zombie or kernel thread holds no resident memory
                name = (entry / "comm").read_text().strip() or "?"
                used = int(rss[0]) * _UNITS.get(rss[1] if len(rss) > 1 else "", 1)
            except (OSError, ValueError):
                continue
            out.append(GpuProcess(pid=pid, name=name, used_bytes=used))
        return sorted(out, key=lambda p: p.pid)


__all__ = ["HostMemoryInventory"]

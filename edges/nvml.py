"""The real GPU inventory: NVML through the `pynvml` module of nvidia-ml-py (MISSION §4).

Pre-flight asks "will `gpu_memory_utilization x total` fit in what is free right now?", so this
reader must either answer with the device's real numbers or raise `InventoryUnavailable`. It never
returns an empty list or a made-up GPU: a machine without a driver, a lost GPU or a wrong index
all end in a one-line reason that names the NVML error.

Every call goes through the `pynvml` module attribute (never `from pynvml import ...`), so that
the tests can replace the C-calling functions of the real module and nothing else.

Indices are NVML's (PCI bus order); NVML ignores CUDA_VISIBLE_DEVICES, so a deployment pinned
with that variable must name the NVML indices it maps to.
"""
from __future__ import annotations

from pathlib import Path

from selfheal.handlers.ports import InventoryUnavailable
from selfheal.schemas.events import GpuProcess, GpuSnapshot

# Why each failure happens, in words an operator can act on; the NVML name is appended.
_REASONS = {
    "LIBRARY_NOT_FOUND": "no NVIDIA driver library (libnvidia-ml.so) on this machine",
    "DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded (no GPU here, or a container started without GPU access)",
    "NO_PERMISSION": "no permission to query the GPU (check access to /dev/nvidia*)",
    "GPU_IS_LOST": "the GPU has fallen off the bus or stopped responding (it needs a reset or a reboot)",
    "RESET_REQUIRED": "the GPU needs a reset before it can be used",
    "LIB_RM_VERSION_MISMATCH": "the NVML library and the loaded kernel driver are different versions "
                               "(reload the driver or reboot after a driver upgrade)",
    "FUNCTION_NOT_FOUND": "the installed NVML library is too old for this call",
    "UNINITIALIZED": "NVML was not initialised",
    "GPU_NOT_FOUND": "the GPU was not found",
    "NOT_SUPPORTED": "the driver does not support this query on this GPU",
    "TIMEOUT": "the driver timed out",
    "IRQ_ISSUE": "the driver reported an interrupt problem with the GPU",
    "CORRUPTED_INFOROM": "the GPU's infoROM is corrupted",
    "OPERATING_SYSTEM": "the operating system blocked the request",
    "MEMORY": "the driver ran out of host memory",
    "INSUFFICIENT_POWER": "the GPU lacks external power",
    "UNKNOWN": "the driver reported an unknown error",
}
# pynvml turns NVML_VALUE_NOT_AVAILABLE into None, but an older binding may hand it over raw.
_NOT_AVAILABLE = (1 << 64) - 1
# A process list the driver will not give (vGPU, containers without permission) does not make the
# memory numbers wrong, and those are what pre-flight decides on; the gap is recorded, not hidden.
_PROCESS_LIST_GAPS = ("NOT_SUPPORTED", "NO_PERMISSION")


def _error_name(pynvml, err) -> str:
    """NVML_ERROR_* constant name without the prefix, e.g. 'LIBRARY_NOT_FOUND'."""
    value = getattr(err, "value", None)
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == value:
            return name[len("NVML_ERROR_"):]
    return f"CODE_{value}"


def _unavailable(pynvml, call: str, err) -> InventoryUnavailable:
    name = _error_name(pynvml, err)
    why = _REASONS.get(name, "the NVML call failed")
    return InventoryUnavailable(f"{call}: {why} [NVML_ERROR_{name}: {err}]", source="nvml")


def _text(value) -> str:
    # Older pynvml returned char arrays as bytes; newer ones decode them.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlInventory:
    source = "nvml"

    def __init__(self, indices: list[int] | None = None, *, proc_root: str = "/proc"):
        if indices is not None:
            # An empty or negative selection is a configuration mistake, not a runtime state.
            if not indices or any(i < 0 for i in indices):
                raise ValueError(f"NvmlInventory indices must be a non-empty list of GPU indices >= 0, got {indices!r}")
            indices = sorted(set(indices))
        self.indices = indices
        self.proc_root = Path(proc_root)

    def snapshot(self) -> list[GpuSnapshot]:
        try:
            import pynvml
        except ImportError as exc:
            raise InventoryUnavailable(f"the pynvml module (nvidia-ml-py) is not installed: {exc}") from exc
        # Older bindings lack this class; an empty tuple catches nothing.
        mismatch = getattr(pynvml, "NVMLLibraryMismatchError", ())
        call = "nvmlInit"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            # Nothing was initialised, so there is nothing to shut down.
            raise _unavailable(pynvml, call, err) from err
        try:
            call = "nvmlDeviceGetCount"
            count = pynvml.nvmlDeviceGetCount()
            if count <= 0:
                raise InventoryUnavailable("nvmlDeviceGetCount: NVML sees no GPUs on this machine")
            wanted = self.indices if self.indices is not None else list(range(count))
            missing = [i for i in wanted if i >= count]
            if missing:
                raise InventoryUnavailable(f"GPU index {missing[0]} does not exist: NVML sees {count} GPU(s), "
                                           f"indices 0-{count - 1}")
            out = []
            for index in wanted:
                call = f"GPU {index}"
                out.append(self._device(pynvml, index))
            return out
        except pynvml.NVMLError as err:
            raise _unavailable(pynvml, call, err) from err
        except mismatch as err:
            raise InventoryUnavailable(f"{call}: pynvml and the NVML library do not match ({err})") from err
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                # The numbers already read stay true; a failed shutdown must not hide them or mask
                # the error that is already on its way out.
                pass

    def _device(self, pynvml, index: int) -> GpuSnapshot:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(pynvml.nvmlDeviceGetName(handle))
        total, free = self._memory(pynvml, handle)
        return GpuSnapshot(index=index, name=name, total_bytes=total, used_bytes=max(0, total - free),
                           free_bytes=free, processes=self._processes(pynvml, handle), source=self.source)

    @staticmethod
    def _memory(pynvml, handle) -> tuple[int, int]:
        """(total, free) bytes.

        v2 is preferred because it is the current API; its `used` leaves out driver-reserved
        memory while v1's includes it, but reserved memory cannot be allocated by vLLM either,
        so used is total - free with both and used + free == total, as in the simulated inventory.
        NVML's total is a little larger than CUDA's (which vLLM multiplies by the utilization), so
        pre-flight's required bytes err on the safe side.
        """
        version = getattr(pynvml, "nvmlMemory_v2", None)
        if version is not None:
            try:
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle, version=version)
                return int(mem.total), int(mem.free)
            except TypeError:
                pass  # an older binding without the version argument
            except pynvml.NVMLError as err:
                if _error_name(pynvml, err) not in ("FUNCTION_NOT_FOUND", "NOT_SUPPORTED", "ARGUMENT_VERSION_MISMATCH"):
                    raise
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return int(mem.total), int(mem.free)

    def _processes(self, pynvml, handle) -> list[GpuProcess]:
        seen: dict[int, GpuProcess] = {}
        gaps = []
        for kind, query in (("compute", pynvml.nvmlDeviceGetComputeRunningProcesses),
                            ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses)):
            try:
                infos = query(handle)
            except pynvml.NVMLError as err:
                if _error_name(pynvml, err) not in _PROCESS_LIST_GAPS:
                    raise
                gaps.append(f"{kind}: {err}")
                continue
            for info in infos:
                pid, used = int(info.pid), info.usedGpuMemory
                known = used is not None and used != _NOT_AVAILABLE
                name = self._process_name(pynvml, pid)
                if not known:
                    name += " (memory use not reported by the driver)"
                proc = GpuProcess(pid=pid, name=name, used_bytes=int(used) if known else 0)
                # A process that does compute and graphics appears in both lists with the same
                # usage; counting it twice would invent memory.
                if pid not in seen or proc.used_bytes > seen[pid].used_bytes:
                    seen[pid] = proc
        procs = sorted(seen.values(), key=lambda p: p.pid)
        if gaps:
            # pid 0 is never a user process: it marks that the list is incomplete, with the reason.
            procs.append(GpuProcess(pid=0, name=f"? (process list not available: {'; '.join(gaps)})", used_bytes=0))
        return procs

    def _process_name(self, pynvml, pid: int) -> str:
        try:
            name = _text(pynvml.nvmlSystemGetProcessName(pid)).strip()
            if name:
                return name
        except pynvml.NVMLError:
            pass  # another user's process, or one that has just exited
        try:
            # In a container NVML may report host pids that /proc here does not show.
            name = (self.proc_root / str(pid) / "comm").read_text().strip()
            if name:
                return name
        except OSError:
            pass
        return "?"


__all__ = ["NvmlInventory"]

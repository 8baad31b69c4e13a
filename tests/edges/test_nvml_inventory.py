"""NvmlInventory against the real pynvml module, with only its C-calling functions replaced.

The fake stands where the driver would: it returns pynvml's own structs (built and converted by
pynvml's own Python code) and raises pynvml's own NVMLError subclasses, constructed the way
pynvml constructs them (`NVMLError(code)`), so everything above the C boundary is the real thing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from selfheal.edges import gpu_check
from selfheal.handlers.ports import GpuInventory, InventoryUnavailable
from selfheal.edges.nvml import NvmlInventory

GIB, MIB = 1 << 30, 1 << 20
NOT_AVAILABLE = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value


class FakeGpu:
    def __init__(self, name, total, free, reserved=0, compute=(), graphics=()):
        self.name, self.total, self.free, self.reserved = name, total, free, reserved
        self.compute, self.graphics = list(compute), list(graphics)  # (pid, usedGpuMemory or None)


class FakeDriver:
    """What libnvidia-ml.so would answer, behind pynvml's real Python layer."""

    def __init__(self, gpus, *, process_names=None, fail=None, v2=True, raw_names=False, raw_not_available=False):
        self.gpus, self.process_names = gpus, process_names or {}
        self.fail = fail or {}  # call name -> (gpu index or None for any, NVML error code)
        self.v2, self.raw_names, self.raw_not_available = v2, raw_names, raw_not_available
        self.calls: list[str] = []

    def _check(self, call, index=None):
        self.calls.append(call)
        if call in self.fail:
            where, code = self.fail[call]
            if where is None or where == index:
                raise pynvml.NVMLError(code)

    def install(self, mp):
        for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
                     "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetComputeRunningProcesses",
                     "nvmlDeviceGetGraphicsRunningProcesses", "nvmlSystemGetProcessName"):
            mp.setattr(pynvml, name, getattr(self, name))
        return self

    def nvmlInit(self):
        self._check("nvmlInit")

    def nvmlShutdown(self):
        self._check("nvmlShutdown")

    def nvmlDeviceGetCount(self):
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return (index, self.gpus[index])  # opaque to the caller, like c_nvmlDevice_t

    def nvmlDeviceGetName(self, handle):
        self._check("nvmlDeviceGetName", handle[0])
        name = handle[1].name
        return name.encode() if self.raw_names else name  # old pynvml returned bytes

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        index, gpu = handle
        if version:
            self._check("nvmlDeviceGetMemoryInfo_v2", index)
            if not self.v2:  # what _nvmlGetFunctionPointer raises for a symbol the library lacks
                raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            assert version == pynvml.nvmlMemory_v2
            return pynvml.c_nvmlMemory_v2_t(version=version, total=gpu.total, reserved=gpu.reserved,
                                            free=gpu.free, used=gpu.total - gpu.free - gpu.reserved)
        self._check("nvmlDeviceGetMemoryInfo", index)
        return pynvml.c_nvmlMemory_t(total=gpu.total, free=gpu.free, used=gpu.total - gpu.free)

    def _procs(self, call, handle, entries):
        self._check(call, handle[0])
        out = []
        for pid, used in entries:
            struct = pynvml.c_nvmlProcessInfo_t(pid=pid, usedGpuMemory=NOT_AVAILABLE if used is None else used,
                                                gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
            if self.raw_not_available:  # an old binding that hands the struct over unconverted
                out.append(struct)
                continue
            obj = pynvml.nvmlStructToFriendlyObject(struct)  # pynvml's own conversion, as in _v3
            if obj.usedGpuMemory == NOT_AVAILABLE:
                obj.usedGpuMemory = None
            out.append(obj)
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self._procs("nvmlDeviceGetComputeRunningProcesses", handle, handle[1].compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        return self._procs("nvmlDeviceGetGraphicsRunningProcesses", handle, handle[1].graphics)

    def nvmlSystemGetProcessName(self, pid):
        self.calls.append("nvmlSystemGetProcessName")
        if pid not in self.process_names:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        name = self.process_names[pid]
        if isinstance(name, int):  # an error code for this pid
            raise pynvml.NVMLError(name)
        return name


def two_gpus():
    return [FakeGpu("NVIDIA H100 80GB HBM3", total=81559 * MIB, free=60000 * MIB, reserved=469 * MIB,
                    compute=[(4242, 20 * GIB), (5151, 512 * MIB)]),
            FakeGpu("NVIDIA H100 80GB HBM3", total=81559 * MIB, free=81000 * MIB, reserved=469 * MIB,
                    graphics=[(6161, 90 * MIB)])]


NAMES = {4242: "/usr/bin/python3", 5151: "whisper-tts", 6161: "Xorg"}


def test_error_classes_are_pynvmls_own():
    err = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert type(err) is pynvml.NVMLError_LibraryNotFound and str(err) == "NVML Shared Library Not Found"


def test_two_gpus_with_co_tenants_exact(monkeypatch):
    drv = FakeDriver(two_gpus(), process_names=NAMES).install(monkeypatch)
    inv = NvmlInventory()
    assert isinstance(inv, GpuInventory)
    a, b = inv.snapshot()
    assert (a.index, a.name, a.source) == (0, "NVIDIA H100 80GB HBM3", "nvml")
    assert (a.total_bytes, a.free_bytes, a.used_bytes) == (81559 * MIB, 60000 * MIB, 21559 * MIB)
    assert [(p.pid, p.name, p.used_bytes) for p in a.processes] == [
        (4242, "/usr/bin/python3", 20 * GIB), (5151, "whisper-tts", 512 * MIB)]
    assert (b.index, b.total_bytes, b.free_bytes, b.used_bytes) == (1, 81559 * MIB, 81000 * MIB, 559 * MIB)
    assert [(p.pid, p.name, p.used_bytes) for p in b.processes] == [(6161, "Xorg", 90 * MIB)]
    assert drv.calls[0] == "nvmlInit" and drv.calls[-1] == "nvmlShutdown"
    assert "nvmlDeviceGetMemoryInfo" not in drv.calls  # v2 was there, so v1 was not asked


def test_indices_select_devices(monkeypatch):
    FakeDriver(two_gpus(), process_names=NAMES).install(monkeypatch)
    assert [g.index for g in NvmlInventory([1]).snapshot()] == [1]
    assert [g.index for g in NvmlInventory([1, 0, 1]).snapshot()] == [0, 1]
    for bad in ([], [-1]):
        with pytest.raises(ValueError):
            NvmlInventory(bad)


def test_v1_memory_when_the_library_lacks_v2(monkeypatch):
    drv = FakeDriver(two_gpus(), process_names=NAMES, v2=False).install(monkeypatch)
    a, _ = NvmlInventory().snapshot()
    assert (a.total_bytes, a.free_bytes, a.used_bytes) == (81559 * MIB, 60000 * MIB, 21559 * MIB)
    assert "nvmlDeviceGetMemoryInfo" in drv.calls


def test_name_as_bytes_from_old_pynvml(monkeypatch):
    FakeDriver(two_gpus(), process_names={**NAMES, 4242: b"/usr/bin/python3"}, raw_names=True).install(monkeypatch)
    a, _ = NvmlInventory().snapshot()
    assert a.name == "NVIDIA H100 80GB HBM3" and a.processes[0].name == "/usr/bin/python3"


@pytest.mark.parametrize("raw", [False, True], ids=["converted-to-None", "raw-not-available"])
def test_used_memory_not_reported(monkeypatch, raw):
    gpu = FakeGpu("NVIDIA A10G", total=23028 * MIB, free=20000 * MIB, compute=[(777, None)])
    FakeDriver([gpu], process_names={777: "vllm"}, raw_not_available=raw).install(monkeypatch)
    [g] = NvmlInventory().snapshot()
    [p] = g.processes
    assert (p.pid, p.used_bytes) == (777, 0) and p.name == "vllm (memory use not reported by the driver)"
    assert g.used_bytes == 3028 * MIB  # the device totals still say what is taken


def test_process_in_both_lists_counted_once(monkeypatch):
    gpu = FakeGpu("NVIDIA RTX A6000", total=48 * GIB, free=40 * GIB, compute=[(9, 6 * GIB)], graphics=[(9, 6 * GIB)])
    FakeDriver([gpu], process_names={9: "blender"}).install(monkeypatch)
    [g] = NvmlInventory().snapshot()
    assert [(p.pid, p.used_bytes) for p in g.processes] == [(9, 6 * GIB)]


def test_process_name_falls_back_to_proc_then_question_mark(monkeypatch, tmp_path):
    gpu = FakeGpu("NVIDIA L4", total=23034 * MIB, free=10 * GIB, compute=[(11, GIB), (12, GIB)])
    FakeDriver([gpu], process_names={11: pynvml.NVML_ERROR_NO_PERMISSION}).install(monkeypatch)
    (tmp_path / "11").mkdir()
    (tmp_path / "11" / "comm").write_text("ollama\n")
    [g] = NvmlInventory(proc_root=str(tmp_path)).snapshot()
    assert [(p.pid, p.name) for p in g.processes] == [(11, "ollama"), (12, "?")]


def test_process_list_not_supported_is_recorded_not_hidden(monkeypatch):
    drv = FakeDriver(two_gpus(), process_names=NAMES,
                     fail={"nvmlDeviceGetGraphicsRunningProcesses": (1, pynvml.NVML_ERROR_NOT_SUPPORTED)})
    drv.install(monkeypatch)
    _, b = NvmlInventory().snapshot()
    assert [(p.pid, p.name, p.used_bytes) for p in b.processes] == [
        (0, "? (process list not available: graphics: Not Supported)", 0)]
    assert b.free_bytes == 81000 * MIB


ERRORS = [
    ("nvmlInit", None, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
     "nvmlInit: no NVIDIA driver library (libnvidia-ml.so) on this machine "
     "[NVML_ERROR_LIBRARY_NOT_FOUND: NVML Shared Library Not Found]"),
    ("nvmlInit", None, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
     "nvmlInit: the NVIDIA kernel driver is not loaded (no GPU here, or a container started without GPU access) "
     "[NVML_ERROR_DRIVER_NOT_LOADED: Driver Not Loaded]"),
    ("nvmlInit", None, pynvml.NVML_ERROR_NO_PERMISSION,
     "nvmlInit: no permission to query the GPU (check access to /dev/nvidia*) "
     "[NVML_ERROR_NO_PERMISSION: Insufficient Permissions]"),
    ("nvmlInit", None, pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "[NVML_ERROR_LIB_RM_VERSION_MISMATCH: "),
    ("nvmlDeviceGetCount", None, pynvml.NVML_ERROR_UNKNOWN,
     "nvmlDeviceGetCount: the driver reported an unknown error [NVML_ERROR_UNKNOWN: Unknown Error]"),
    ("nvmlDeviceGetHandleByIndex", 1, pynvml.NVML_ERROR_GPU_IS_LOST,
     "GPU 1: the GPU has fallen off the bus or stopped responding (it needs a reset or a reboot) "
     "[NVML_ERROR_GPU_IS_LOST: GPU is lost]"),
    ("nvmlDeviceGetHandleByIndex", 0, pynvml.NVML_ERROR_NO_PERMISSION, "GPU 0: no permission to query the GPU"),
    ("nvmlDeviceGetName", 0, pynvml.NVML_ERROR_UNKNOWN, "GPU 0: the driver reported an unknown error"),
    ("nvmlDeviceGetMemoryInfo_v2", 1, pynvml.NVML_ERROR_GPU_IS_LOST, "GPU 1: the GPU has fallen off the bus"),
    ("nvmlDeviceGetComputeRunningProcesses", 0, pynvml.NVML_ERROR_GPU_IS_LOST, "GPU 0: the GPU has fallen off"),
]


@pytest.mark.parametrize("call,where,code,message", ERRORS, ids=[f"{e[0]}-{e[2]}" for e in ERRORS])
def test_each_nvml_error_is_inventory_unavailable(monkeypatch, call, where, code, message):
    drv = FakeDriver(two_gpus(), process_names=NAMES, fail={call: (where, code)}).install(monkeypatch)
    with pytest.raises(InventoryUnavailable) as info:
        NvmlInventory().snapshot()
    assert message in info.value.reason and info.value.source == "nvml" and "\n" not in info.value.reason
    assert isinstance(info.value.__cause__, pynvml.NVMLError)
    # Shut down whenever init succeeded; never when it did not (there is nothing to shut down).
    assert drv.calls.count("nvmlShutdown") == (0 if call == "nvmlInit" else 1)
    if call != "nvmlInit":
        assert drv.calls[-1] == "nvmlShutdown"


def test_no_devices(monkeypatch):
    drv = FakeDriver([]).install(monkeypatch)
    with pytest.raises(InventoryUnavailable, match="NVML sees no GPUs on this machine"):
        NvmlInventory().snapshot()
    assert drv.calls[-1] == "nvmlShutdown"


def test_index_that_does_not_exist(monkeypatch):
    drv = FakeDriver(two_gpus(), process_names=NAMES).install(monkeypatch)
    with pytest.raises(InventoryUnavailable) as info:
        NvmlInventory([0, 2]).snapshot()
    assert info.value.reason == "GPU index 2 does not exist: NVML sees 2 GPU(s), indices 0-1"
    assert drv.calls[-1] == "nvmlShutdown" and "nvmlDeviceGetHandleByIndex" not in drv.calls


def test_failed_shutdown_keeps_the_numbers_and_does_not_mask_errors(monkeypatch):
    fail = {"nvmlShutdown": (None, pynvml.NVML_ERROR_UNKNOWN)}
    FakeDriver(two_gpus(), process_names=NAMES, fail=fail).install(monkeypatch)
    assert len(NvmlInventory().snapshot()) == 2
    fail["nvmlDeviceGetName"] = (0, pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(InventoryUnavailable, match="GPU_IS_LOST"):
        NvmlInventory().snapshot()


def test_gpu_check_prints_json(monkeypatch, capsys):
    FakeDriver(two_gpus(), process_names=NAMES).install(monkeypatch)
    assert gpu_check.main(["1"]) == 0
    [g] = json.loads(capsys.readouterr().out)
    assert g["index"] == 1 and g["free_bytes"] == 81000 * MIB and g["processes"][0]["name"] == "Xorg"
    FakeDriver([]).install(monkeypatch)
    assert gpu_check.main([]) == 1
    assert "NVML sees no GPUs" in capsys.readouterr().err


# -- the real, unpatched reader on whatever machine runs the tests -------------------------------

def _real_snapshot():
    try:
        return NvmlInventory().snapshot(), None
    except InventoryUnavailable as exc:
        return None, exc


def test_real_reader_without_a_gpu_says_so_clearly():
    snapshot, exc = _real_snapshot()
    if snapshot is not None:
        pytest.skip(f"a real NVIDIA GPU is present ({snapshot[0].name}); the no-GPU path cannot be seen here")
    assert exc.source == "nvml" and "NVML_ERROR_" in exc.reason and "\n" not in exc.reason
    assert str(exc).startswith("GPU inventory unavailable (nvml): ") and "no canary is started" in str(exc)


def test_real_reader_on_a_gpu_reads_sane_numbers():
    snapshot, exc = _real_snapshot()
    if snapshot is None:
        pytest.skip(f"no NVIDIA GPU readable here: {exc.reason}")
    for g in snapshot:
        assert g.total_bytes > GIB and 0 <= g.free_bytes <= g.total_bytes
        assert g.used_bytes == g.total_bytes - g.free_bytes and g.source == "nvml"


def test_gpu_check_as_a_command():
    proc = subprocess.run([sys.executable, "-m", "selfheal.edges.gpu_check"], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    snapshot, exc = _real_snapshot()
    if snapshot is None:
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.strip() == str(exc)
    else:
        assert proc.returncode == 0 and len(json.loads(proc.stdout)) == len(snapshot)

"""Facts about the device a profile was measured on: GPU through pynvml, or the host CPU."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    try:
        with open("/proc/cpuinfo") as f:
            pairs = set()
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    pairs.add((phys, core))
            return len(pairs) or None
    except OSError:
        return None


def cpu_facts() -> dict[str, Any]:
    """CPU model, cores, threads available to this process, torch intra-op threads."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return {"type": "cpu", "name": _cpu_model(), "cores": _physical_cores(), "threads": os.cpu_count(),
            "threads_available": available, "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}


def gpu_facts(index: int) -> dict[str, Any]:
    """Name, memory, driver, clocks (current and max, MHz), power limit (W) of CUDA device `index`.

    Uses pynvml (nvidia-ml-py) when present; falls back to what torch reports.
    """
    props = torch.cuda.get_device_properties(index)
    facts: dict[str, Any] = {"type": "cuda", "index": index, "name": props.name,
                             "memory_bytes": int(props.total_memory),
                             "sm_count": props.multi_processor_count,
                             "compute_capability": f"{props.major}.{props.minor}",
                             "cuda": torch.version.cuda}
    try:
        import pynvml
    except ImportError:
        facts["nvml"] = "pynvml not installed"
        return facts
    try:
        pynvml.nvmlInit()
        # CUDA_VISIBLE_DEVICES remaps indices; NVML sees physical ones. Match by PCI bus id when we can.
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        try:
            bus = getattr(props, "pci_bus_id", None)
            if isinstance(bus, int):
                bus = f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
            if bus:
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
        except Exception:  # keep the index-based handle
            pass

        def get(fn, *args):
            try:
                v = fn(handle, *args)
                return v.decode() if isinstance(v, bytes) else v
            except pynvml.NVMLError:
                return None

        mem = get(pynvml.nvmlDeviceGetMemoryInfo)
        driver = pynvml.nvmlSystemGetDriverVersion()
        power = get(pynvml.nvmlDeviceGetPowerManagementLimit)
        facts.update({
            "name": get(pynvml.nvmlDeviceGetName) or props.name,
            "memory_bytes": int(mem.total) if mem is not None else facts["memory_bytes"],
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "sm_clock_mhz": get(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            "sm_clock_max_mhz": get(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
            "memory_clock_mhz": get(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
            "memory_clock_max_mhz": get(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
            "power_limit_w": power / 1000.0 if power is not None else None,
            "uuid": get(pynvml.nvmlDeviceGetUUID),
        })
        pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing or driver mismatch: keep what torch said
        facts["nvml"] = f"unavailable: {exc}"
    return facts


def device_facts(device: torch.device) -> dict[str, Any]:
    """Facts for a profile's "device" field."""
    if device.type == "cuda":
        return gpu_facts(device.index if device.index is not None else torch.cuda.current_device())
    return cpu_facts()


def software_facts() -> dict[str, Any]:
    """Versions that change timings: torch, python, CUDA/cuDNN."""
    return {"torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}

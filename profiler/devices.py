"""Accelerator presets for the roofline: datasheet peaks, the achievable rates the estimate uses, links.

Every preset carries its datasheet source. The roofline prices work at *effective* rates: 80 % of the
dense (no 2:4 sparsity) tensor-core peak for the data type (what large cuBLAS / CUTLASS GEMMs
sustain), ~90 % of peak memory bandwidth (what a memory-bound GEMV or a device copy sustains) and
80 % of the per-direction link bandwidth for collectives. DeepEP reports 153-158 GB/s of the H800's
~160 GB/s NVLink (96 %) and 726 of the B200's 900 GB/s (81 %) for all-to-all, so 80 % is a middle
figure, not a measurement of ours. Collective latencies are assumptions (a few microseconds inside an
NVLink domain, more across the network), stated as such in the profile.

FLOP rates are per data type: `rate("float8")` is the device's FP8 tensor-core rate where it has one,
otherwise the next wider type it computes in (an A100 runs FP8 weights as weight-only quantization,
dequantized to BF16 for the math).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# canonical dtype names and their bytes per element; aliases map onto them
DTYPE_BYTES: dict[str, float] = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1, "float4": 0.5}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
                 "fp8": "float8", "float8_e4m3fn": "float8", "fp4": "float4", "nvfp4": "float4", "mxfp4": "float4"}
_WIDER = {"float4": "float8", "float8": "bfloat16", "float16": "bfloat16", "bfloat16": "float32"}

COMPUTE_EFFICIENCY = 0.8  # effective / datasheet dense tensor-core FLOP/s
BANDWIDTH_EFFICIENCY = 0.9  # effective / datasheet memory bandwidth
LINK_EFFICIENCY = 0.8  # effective / datasheet per-direction NVLink or NIC bandwidth


def canonical_dtype(name: str) -> str:
    """'fp8' -> 'float8', 'bfloat16' -> 'bfloat16'; ValueError naming the known types otherwise."""
    key = str(name).lower().replace("torch.", "")
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPE_BYTES)} "
                         f"(or {', '.join(sorted(DTYPE_ALIASES))})")
    return key


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator: datasheet peaks (dense, per data type), memory, links, and the effective rates used.

    Attributes:
        name: human-readable name.
        peak_tflops: datasheet dense tensor-core TFLOP/s by canonical dtype (absent = not supported).
        peak_bandwidth: datasheet memory bytes/s.
        memory_bytes: device memory (bytes).
        link_bytes_per_s: datasheet NVLink (or PCIe / Infinity Fabric) bytes/s per direction per GPU.
        network_bytes_per_s: per-GPU scale-out NIC bytes/s per direction (400 Gb/s = 50e9).
        gpus_per_node: size of the fast-link domain (8 for an HGX board; 1 for PCIe cards).
        launch_gap_s: per-kernel gap that remains under CUDA-graph replay (s).
        link_latency_s, network_latency_s: fixed cost of one collective inside / across nodes (assumed).
        source: where the datasheet figures come from.
    """

    name: str
    peak_tflops: dict[str, float]
    peak_bandwidth: float
    memory_bytes: float
    link_bytes_per_s: float
    network_bytes_per_s: float = 50e9
    gpus_per_node: int = 8
    launch_gap_s: float = 1.0e-6
    link_latency_s: float = 8e-6
    network_latency_s: float = 20e-6
    source: str = ""
    compute_efficiency: float = COMPUTE_EFFICIENCY
    bandwidth_efficiency: float = BANDWIDTH_EFFICIENCY
    link_efficiency: float = LINK_EFFICIENCY
    key: str = field(default="", compare=False)

    @property
    def flops(self) -> float:
        """Effective dense BF16 FLOP/s (the rate attention and unquantized GEMMs run at)."""
        return self.rate("bfloat16")

    @property
    def peak_flops(self) -> float:
        """Datasheet dense BF16 FLOP/s."""
        return self.peak_tflops["bfloat16"] * 1e12

    @property
    def bandwidth(self) -> float:
        """Effective memory bytes/s."""
        return self.peak_bandwidth * self.bandwidth_efficiency

    @property
    def link_bandwidth(self) -> float:
        """Effective per-direction link bytes/s inside the fast-link domain."""
        return self.link_bytes_per_s * self.link_efficiency

    @property
    def network_bandwidth(self) -> float:
        """Effective per-direction scale-out bytes/s per GPU."""
        return self.network_bytes_per_s * self.link_efficiency

    def compute_dtype(self, dtype: str) -> str:
        """The dtype the device does the math in for `dtype` operands (itself, or the next wider one)."""
        d = canonical_dtype(dtype)
        while d not in self.peak_tflops:
            d = _WIDER[d]
        return d

    def rate(self, dtype: str) -> float:
        """Effective FLOP/s for GEMMs on `dtype` operands (see `compute_dtype`)."""
        return self.peak_tflops[self.compute_dtype(dtype)] * 1e12 * self.compute_efficiency

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(flops=self.flops, peak_flops=self.peak_flops, bandwidth=self.bandwidth,
                 link_bandwidth=self.link_bandwidth, network_bandwidth=self.network_bandwidth)
        return d


GiB = 2**30
MiB = 2**20  # H100 / H200 memory as nvidia-smi reports it (81559 MiB, 143771 MiB)
# Datasheet dense (no sparsity) tensor-core peaks; float32 is the CUDA-core (non-tensor) FP32 rate the
# sampling softmax runs at. TF32 / FP64 omitted: the roofline never uses them.
DEVICES: dict[str, DeviceSpec] = {
    "h100": DeviceSpec(
        "NVIDIA H100 SXM5 80GB (roofline)", {"float32": 66.9, "bfloat16": 989.4, "float16": 989.4, "float8": 1978.9},
        3.35e12, 81559 * MiB, 450e9,
        source="nvidia.com/en-us/data-center/h100 datasheet (SXM5): 989 TFLOP/s BF16 and 1979 FP8 dense "
               "(half the 'with sparsity' figures), 3.35 TB/s HBM3, 80 GB, NVLink 900 GB/s (450 per direction)"),
    "h200": DeviceSpec(
        "NVIDIA H200 SXM 141GB (roofline)", {"float32": 66.9, "bfloat16": 989.4, "float16": 989.4, "float8": 1978.9},
        4.8e12, 143771 * MiB, 450e9,
        source="nvidia.com/en-us/data-center/h200 datasheet (SXM): 989 TFLOP/s BF16 and 1979 FP8 dense, "
               "4.8 TB/s HBM3e, 141 GB, NVLink 900 GB/s"),
    "h800": DeviceSpec(
        "NVIDIA H800 SXM5 80GB (roofline)", {"float32": 66.9, "bfloat16": 989.4, "float16": 989.4, "float8": 1978.9},
        3.35e12, 80 * GiB, 200e9,
        source="NVIDIA H800 SXM5 product brief: H100 compute and HBM3 (3.35 TB/s, 80 GB) with NVLink cut to "
               "400 GB/s (200 per direction); DeepEP measures ~160 GB/s of it"),
    "h20": DeviceSpec(
        "NVIDIA H20 96GB (roofline)", {"float32": 44.0, "bfloat16": 148.0, "float16": 148.0, "float8": 296.0},
        4.0e12, 96 * GiB, 450e9,
        source="NVIDIA H20 product brief: 148 TFLOP/s BF16 and 296 FP8 dense, 4.0 TB/s HBM3, 96 GB, "
               "NVLink 900 GB/s"),
    "b200": DeviceSpec(
        "NVIDIA B200 180GB (roofline)", {"float32": 75.0, "bfloat16": 2250.0, "float16": 2250.0, "float8": 4500.0, "float4": 9000.0},
        8.0e12, 180 * GiB, 900e9,
        source="nvidia.com/en-us/data-center/dgx-b200 datasheet / 8: 2.25 PFLOP/s BF16, 4.5 FP8, 9 FP4 dense "
               "per GPU (half the sparse figures), 8 TB/s HBM3e, 180 GB, NVLink 5 1.8 TB/s"),
    "a100": DeviceSpec(
        "NVIDIA A100 SXM4 80GB (roofline)", {"float32": 19.5, "bfloat16": 312.0, "float16": 312.0},
        2.039e12, 80 * GiB, 300e9, network_bytes_per_s=25e9, launch_gap_s=1.5e-6,
        source="nvidia.com/en-us/data-center/a100 datasheet (SXM4 80GB): 312 TFLOP/s BF16 dense, no FP8, "
               "2.039 TB/s HBM2e, NVLink 600 GB/s, HDR 200 Gb/s NICs"),
    "l40s": DeviceSpec(
        "NVIDIA L40S 48GB (roofline)", {"float32": 91.6, "bfloat16": 362.05, "float16": 362.05, "float8": 733.0},
        0.864e12, 48 * GiB, 32e9, network_bytes_per_s=25e9, gpus_per_node=1, launch_gap_s=1.5e-6,
        link_latency_s=15e-6,
        source="nvidia.com/en-us/data-center/l40s datasheet: 362 TFLOP/s BF16 and 733 FP8 dense (733 / 1466 "
               "with sparsity), 864 GB/s GDDR6, 48 GB, no NVLink (PCIe Gen4 x16, 32 GB/s per direction)"),
    "mi300x": DeviceSpec(
        "AMD Instinct MI300X 192GB (roofline)", {"float32": 163.4, "bfloat16": 1307.4, "float16": 1307.4, "float8": 2614.9},
        5.3e12, 192 * GiB, 448e9, launch_gap_s=1.5e-6,
        source="amd.com Instinct MI300X data sheet: 1307 TFLOP/s BF16 and 2615 FP8 dense, 5.3 TB/s HBM3, "
               "192 GB, 896 GB/s aggregate Infinity Fabric (448 per direction)"),
}
for _k, _v in DEVICES.items():
    object.__setattr__(_v, "key", _k)


def get_device_spec(name: str) -> DeviceSpec:
    """The preset called `name` (case-insensitive); ValueError listing the known devices otherwise."""
    try:
        return DEVICES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown roofline device {name!r}; known: {', '.join(DEVICES)}") from None

"""The GPU catalogue: per-SKU peaks shared by `verify` (performance probes) and `plan` (fit, speed).

Figures are the vendor's datasheet peaks for dense math (no structured sparsity); each entry names its source.
A host config can override any figure (a lab's measured values beat a datasheet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSku:
    name: str
    nvml_pattern: str  # matched case-insensitively against NVML's nvmlDeviceGetName()
    memory_gib: float
    bf16_tflops: float  # dense tensor-core peak
    fp16_tflops: float  # dense tensor-core peak
    memory_bandwidth_gbs: float  # device memory, GB/s
    pcie_gen: int
    pcie_width: int
    source: str
    # NVLink total bidirectional bandwidth per GPU, GB/s (0: no NVLink). P2P probes compare with half of it.
    nvlink_bandwidth_gbs: float = 0.0


# One SKU a line, read as a table: name, NVML pattern, GiB, bf16, fp16 TFLOPS, GB/s, PCIe gen, width,
# source, NVLink GB/s.
# fmt: off
CATALOG: tuple[GpuSku, ...] = (
    GpuSku("H200", r"\bH200\b", 141, 989.5, 989.5, 4800, 5, 16, "NVIDIA H200 Tensor Core GPU datasheet (SXM)", 900),
    GpuSku("H100 SXM", r"\bH100\b.*(SXM|HBM3)", 80, 989.5, 989.5, 3350, 5, 16, "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column", 900),
    GpuSku("H100 PCIe", r"\bH100\b.*PCIe", 80, 756.5, 756.5, 2000, 5, 16, "NVIDIA H100 Tensor Core GPU datasheet, PCIe column (NVLink with bridge)", 600),
    GpuSku("A100 80GB", r"\bA100\b.*80GB", 80, 312, 312, 2039, 4, 16, "NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM column (PCIe: 1935 GB/s)", 600),
    GpuSku("A100 40GB", r"\bA100\b", 40, 312, 312, 1555, 4, 16, "NVIDIA A100 Tensor Core GPU datasheet, 40GB column", 600),
    GpuSku("L40S", r"\bL40S\b", 48, 362.05, 362.05, 864, 4, 16, "NVIDIA L40S datasheet"),
    GpuSku("L4", r"\bL4\b", 24, 121, 121, 300, 4, 16, "NVIDIA L4 Tensor Core GPU datasheet"),
    GpuSku("A10G", r"\bA10G\b", 24, 70, 70, 600, 4, 16, "AWS EC2 G5 documentation (A10G is AWS-specific; NVIDIA publishes no datasheet)"),
    GpuSku("A10", r"\bA10\b", 24, 125, 125, 600, 4, 16, "NVIDIA A10 Tensor Core GPU datasheet"),
    GpuSku("RTX 4090", r"RTX 4090", 24, 165.2, 165.2, 1008, 4, 16, "NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090 (FP32 accumulate)"),
)
# fmt: on


def find_sku(name: str) -> GpuSku | None:
    """The catalogue entry for a device or SKU name (NVML's name, or a catalogue name), or None."""
    for sku in CATALOG:
        if name.strip().lower() == sku.name.lower() or re.search(sku.nvml_pattern, name, re.IGNORECASE):
            return sku
    return None

"""The GPU catalogue: per-SKU peaks shared by `verify` (performance probes) and `plan` (fit, speed).

Peaks are the vendor's datasheet figures for dense math (no structured sparsity); each entry names its source.
Memory is what NVML reports as the device's total (`nvidia-smi`'s memory.total, in MiB), which is what a
training process can fill, not the datasheet's marketing figure: an L4 sold as "24 GB" (decimal gigabytes,
22.35 GiB) reports 23034 MiB = 22.5 GiB. Where ECC is switchable (GDDR cards) the figure is for the
shipping default, and ECC on costs 1/16 (an L40 reports 46068 MiB with ECC on, 49140 MiB with it off).
On a GPU host `llmlab plan` uses the host's own NVML reading instead (`NvmlMemoryReader`).
A host config can override any peak (a lab's measured values beat a datasheet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class GpuSku:
    name: str
    nvml_pattern: str  # matched case-insensitively against NVML's nvmlDeviceGetName()
    memory_mib: int  # total device memory as NVML reports it
    bf16_tflops: float | None  # dense tensor-core peak; None: no bf16 (Turing, Volta)
    fp16_tflops: float  # dense tensor-core peak
    memory_bandwidth_gbs: float  # device memory, GB/s
    pcie_gen: int
    pcie_width: int
    source: str  # of the peaks
    # NVLink total bidirectional bandwidth per GPU, GB/s (0: no NVLink). P2P probes compare with half of it.
    nvlink_bandwidth_gbs: float = 0.0
    memory_source: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / MIB_PER_GIB


# One SKU a line, read as a table: name, NVML pattern, NVML MiB, bf16, fp16 TFLOPS, GB/s, PCIe gen, width,
# source, NVLink GB/s, memory source. Memory sources are nvidia-smi readings published with public code
# and logs (the NVML total does not change between hosts of one SKU and ECC setting).
# fmt: off
CATALOG: tuple[GpuSku, ...] = (
    GpuSku("H200", r"\bH200\b", 143771, 989.5, 989.5, 4800, 5, 16, "NVIDIA H200 Tensor Core GPU datasheet (SXM)", 900, "nvidia-smi 143771MiB = 140.4 GiB on H200 SXM hosts; the datasheet's 141 GB is about that in GiB, not decimal GB (141 GB would be 131 GiB)"),
    GpuSku("B200", r"\bB200\b", 183359, 2250, 2250, 8000, 5, 16, "NVIDIA DGX/HGX B200 datasheet: 36 PFLOPS FP16/BF16 with sparsity per 8 GPUs, halved for dense", 1800, "nvidia-smi 183359MiB on B200 hosts (driver 570); sold as 180 GB"),
    GpuSku("H100 SXM", r"\bH100\b.*(SXM|HBM3)", 81559, 989.5, 989.5, 3350, 5, 16, "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column", 900, "nvidia-smi 81559MiB on 'NVIDIA H100 80GB HBM3' hosts"),
    GpuSku("H100 PCIe", r"\bH100\b.*PCIe", 81559, 756.5, 756.5, 2000, 5, 16, "NVIDIA H100 Tensor Core GPU datasheet, PCIe column (NVLink with bridge)", 600, "as H100 SXM (80 GB HBM2e, same NVML total); not confirmed from a PCIe host"),
    GpuSku("A100 80GB", r"\bA100\b.*80GB", 81920, 312, 312, 2039, 4, 16, "NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM column (PCIe: 1935 GB/s)", 600, "nvidia-smi 81920MiB on A100/A800 80GB hosts"),
    GpuSku("A100 40GB", r"\bA100\b", 40960, 312, 312, 1555, 4, 16, "NVIDIA A100 Tensor Core GPU datasheet, 40GB column", 600, "nvidia-smi 40960MiB on A100-SXM4-40GB and A100-PCIE-40GB hosts"),
    GpuSku("RTX PRO 6000 Blackwell", r"RTX PRO 6000 Blackwell", 97887, 503.8, 503.8, 1792, 5, 16, "NVIDIA RTX PRO 6000 Blackwell datasheet, FP16/BF16 tensor with FP32 accumulate, dense (Max-Q: lower clocks)", 0, "nvidia-smi 97887MiB on Workstation, Max-Q and Server Edition hosts; sold as 96 GB"),
    GpuSku("L40S", r"\bL40S\b", 46068, 362.05, 362.05, 864, 4, 16, "NVIDIA L40S datasheet", 0, "nvidia-smi 46068MiB (ECC on, the default); sold as 48 GB"),
    GpuSku("L40", r"\bL40\b", 46068, 181.05, 181.05, 864, 4, 16, "NVIDIA L40 datasheet (362.1 TFLOPS with sparsity)", 0, "nvidia-smi 46068MiB with ECC on (the default), 49140MiB with ECC off"),
    GpuSku("RTX 6000 Ada", r"RTX 6000 Ada", 49140, 182.1, 182.1, 960, 4, 16, "NVIDIA RTX 6000 Ada Generation datasheet (364.2 TFLOPS FP16 tensor with sparsity)", 0, "nvidia-smi 49140MiB with ECC off (the workstation default); sold as 48 GB"),
    GpuSku("RTX A6000", r"RTX A6000", 49140, 154.8, 154.8, 768, 4, 16, "NVIDIA RTX A6000 datasheet (309.7 TFLOPS tensor with sparsity); NVLink bridge 112.5 GB/s", 112.5, "nvidia-smi 49140MiB with ECC off (the default), 46068MiB with ECC on"),
    GpuSku("L4", r"\bL4\b", 23034, 121, 121, 300, 4, 16, "NVIDIA L4 Tensor Core GPU datasheet", 0, "nvidia-smi 23034MiB = 22.5 GiB on L4 hosts; sold as 24 GB (decimal, 22.35 GiB)"),
    GpuSku("A10G", r"\bA10G\b", 23028, 70, 70, 600, 4, 16, "AWS EC2 G5 documentation (A10G is AWS-specific; NVIDIA publishes no datasheet)", 0, "nvidia-smi 23028MiB on AWS g5 hosts"),
    GpuSku("A10", r"\bA10\b", 23028, 125, 125, 600, 4, 16, "NVIDIA A10 Tensor Core GPU datasheet", 0, "nvidia-smi 23028MiB on 150 W A10 hosts"),
    GpuSku("RTX 5090", r"RTX 5090", 32607, 209.5, 209.5, 1792, 5, 16, "NVIDIA RTX Blackwell GPU architecture whitepaper, GeForce RTX 5090 (FP32 accumulate)", 0, "nvidia-smi 32607MiB on RTX 5090 hosts; sold as 32 GB"),
    GpuSku("RTX 4090", r"RTX 4090", 24564, 165.2, 165.2, 1008, 4, 16, "NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090 (FP32 accumulate)", 0, "nvidia-smi 24564MiB on RTX 4090 hosts"),
    GpuSku("T4", r"\bT4\b", 15360, None, 65, 320, 3, 16, "NVIDIA T4 datasheet (FP16 mixed precision; Turing has no bf16)", 0, "nvidia-smi 15360MiB on 'Tesla T4' hosts (ECC on); sold as 16 GB"),
    GpuSku("V100 32GB", r"\bV100S?\b.*32GB", 32768, None, 125, 900, 3, 16, "NVIDIA V100 datasheet, SXM2 column (PCIe: 112 TFLOPS; Volta has no bf16)", 300, "32 GiB nominal; not confirmed from an NVML reading"),
    GpuSku("V100 16GB", r"\bV100", 16160, None, 125, 900, 3, 16, "NVIDIA V100 datasheet, SXM2 column (PCIe: 112 TFLOPS; Volta has no bf16)", 300, "nvidia-smi 16160MiB on V100-SXM2-16GB and V100-PCIE-16GB hosts"),
)
# fmt: on


def find_sku(name: str) -> GpuSku | None:
    """The catalogue entry for a device or SKU name (NVML's name, or a catalogue name), or None."""
    for sku in CATALOG:
        if name.strip().lower() == sku.name.lower() or re.search(sku.nvml_pattern, name, re.IGNORECASE):
            return sku
    return None


@dataclass(frozen=True)
class HostGpu:
    name: str
    memory_mib: float  # NVML's total


class GpuMemoryReader(Protocol):
    def gpus(self) -> list[HostGpu]: ...


class NvmlMemoryReader:
    """Name and total memory of every GPU on this host through NVML; [] where NVML cannot start."""

    def gpus(self) -> list[HostGpu]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no nvidia-ml-py, no driver, no GPU: pynvml raises NVMLError or OSError
            return []
        try:
            found = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
                found.append(HostGpu(name.decode() if isinstance(name, bytes) else name, total / 2**20))
            return found
        except pynvml.NVMLError:
            return []
        finally:
            pynvml.nvmlShutdown()

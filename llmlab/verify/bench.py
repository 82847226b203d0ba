"""Torch measurements behind the performance probes. torch is imported inside each method (it takes seconds).

Each measurement runs for a time budget rather than a fixed count, so a probe is bounded on any GPU. The
device is a torch device string: the probes pass "cuda:N"; tests run the same code on "cpu" with small sizes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(torch: Any, device: str, step: Callable[[], None], seconds: float) -> tuple[int, float]:
    """Warm up once, then repeat `step` until the budget is spent; (repetitions, elapsed seconds)."""
    step()
    _sync(torch, device)
    reps, start = 0, time.perf_counter()
    while True:
        step()
        reps += 1
        _sync(torch, device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return reps, elapsed


class TorchBench:
    def gemm_tflops(self, device: str, dtype: str, seconds: float, size: int = 8192) -> float:
        """Dense matmul throughput: 2*n^3 flops per n x n product."""
        import torch

        a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
        b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
        reps, elapsed = _timed(torch, device, lambda: torch.mm(a, b), seconds)
        return 2 * size**3 * reps / elapsed / 1e12

    def memory_bandwidth_gbs(self, device: str, seconds: float, nbytes: int = 1 << 30) -> float:
        """Device-to-device copy: each copy reads and writes nbytes."""
        import torch

        src = torch.empty(nbytes, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        reps, elapsed = _timed(torch, device, lambda: dst.copy_(src), seconds)
        return 2 * nbytes * reps / elapsed / 1e9

    def host_copy_gbs(self, device: str, seconds: float, nbytes: int = 256 << 20) -> float:
        """Host-to-device copy from pinned memory (what a data loader with pin_memory does)."""
        import torch

        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=device.startswith("cuda"))
        dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
        reps, elapsed = _timed(torch, device, lambda: dev.copy_(host, non_blocking=True), seconds)
        return nbytes * reps / elapsed / 1e9

    def p2p_gbs(self, src: str, dst: str, seconds: float, nbytes: int = 256 << 20) -> float:
        """One-way copy between two devices (NVLink or PCIe peer-to-peer)."""
        import torch

        a = torch.empty(nbytes, dtype=torch.uint8, device=src)
        b = torch.empty(nbytes, dtype=torch.uint8, device=dst)

        def step() -> None:
            b.copy_(a)
            _sync(torch, src)

        reps, elapsed = _timed(torch, dst, step, seconds)
        return nbytes * reps / elapsed / 1e9

    def all_reduce_busbw_gbs(
        self, world_size: int, seconds: float, backend: str = "nccl", nbytes: int = 256 << 20
    ) -> float:
        """All-reduce bus bandwidth as nccl-tests reports it: algbw * 2(n-1)/n, one process per device."""
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        port = _free_port()
        mp.start_processes(
            _all_reduce_rank,
            args=(world_size, backend, port, nbytes, seconds, queue),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        algbw = queue.get()
        return algbw * 2 * (world_size - 1) / world_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_reduce_rank(
    rank: int, world: int, backend: str, port: int, nbytes: int, seconds: float, queue: Any
) -> None:
    import torch
    import torch.distributed as dist

    device = f"cuda:{rank}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        tensor = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        dist.all_reduce(tensor)  # warm-up: sets up the communicators
        _sync(torch, device)
        dist.barrier()
        reps, start = 0, time.perf_counter()
        while True:
            dist.all_reduce(tensor)
            reps += 1
            _sync(torch, device)
            # every rank must run the same number of collectives: rank 0 decides when to stop
            done = torch.tensor([time.perf_counter() - start >= seconds], dtype=torch.int32, device=device)
            dist.broadcast(done, src=0)
            if done.item():
                break
        elapsed = time.perf_counter() - start
        if rank == 0:
            queue.put(nbytes * reps / elapsed / 1e9)
    finally:
        dist.destroy_process_group()

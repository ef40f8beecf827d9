"""Data parallelism for the trainer: each process owns whole groups; counts and gradients are summed.

Started by ``accelerate launch --multi_gpu --num_processes N -m conspo.cli train ...`` (or torchrun; on CPU too); accelerate's
``PartialState`` sets up the process group (NCCL on GPUs, gloo on CPU). Without a launcher it is a
single process and every collective is a no-op.

Why no DDP wrapper: the decomposed update runs a different number of micro-batches on each process
when group filtering leaves them different numbers of valid groups, and DDP's bucketed all-reduce
would then wait forever. Instead each process accumulates its gradient locally (already divided by
the global normalizer) and one flat all-reduce per optimizer step sums them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["Distributed"]


class Distributed:
    """Rank, world size, device and the three collectives the trainer needs."""

    def __init__(self, device: str = "auto") -> None:
        from accelerate import PartialState

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.state = PartialState(cpu=cpu)
        self.rank = self.state.process_index
        self.world_size = self.state.num_processes
        self.device = torch.device("cpu") if cpu else self.state.device
        self.is_main = self.state.is_main_process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes, in place on a copy; returns the summed tensor."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone().to(self._comm_device)
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        return out.to(tensor.device)

    def sum_dict(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum a dict of 0-dim tensors across processes with one collective."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        flat = torch.stack([values[k].detach().float().reshape(()) for k in keys])
        flat = self.all_reduce_sum(flat)
        return {k: flat[i].to(values[k].device) for i, k in enumerate(keys)}

    def all_min(self, value: int) -> int:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self._comm_device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """All-reduce (sum) the gradients of ``parameters`` in one flat buffer; missing grads count as 0."""
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Start every process from rank 0's weights."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            self.state.wait_for_everyone()

    @property
    def _comm_device(self) -> torch.device:
        return self.device

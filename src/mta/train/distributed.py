"""One process or many under torchrun: process group, device per rank, and how the model is parallelised.

As torchtitan does, the model definition knows nothing of this: `parallelize` wraps a built DecoderLM with
FSDP2 (`fully_shard` per block, then the root; bf16 parameters with float32 gradient reduction when the run is
bf16) or DDP. On a CPU the gloo backend runs either (`auto` picks DDP there), so multi-process training can be
tested anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from mta.models import DecoderLM

from .runtime import resolve_device


@dataclass
class Ranks:
    """This process's place in the run: rank, world_size, and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather_object(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_ranks(device: str) -> Ranks:
    """Join the process group torchrun describes (WORLD_SIZE > 1; nccl on CUDA, gloo on CPU), or run alone.

    Under torchrun with CUDA each rank takes the GPU cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world_size == 1:
        return Ranks(0, 1, resolved)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(resolved)
        dist.init_process_group("nccl", device_id=resolved)
    else:
        dist.init_process_group("gloo")
    return Ranks(dist.get_rank(), world_size, resolved)


def close_ranks(ranks: Ranks) -> None:
    if ranks.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def parallel_mode(parallel: str, ranks: Ranks) -> str:
    """How to parallelise: "none" for one process, else "fsdp" or "ddp" ("auto": FSDP2 on CUDA, DDP elsewhere)."""
    if ranks.world_size == 1:
        return "none"
    if parallel == "auto":
        return "fsdp" if ranks.device.type == "cuda" else "ddp"
    return parallel


def parallelize(model: DecoderLM, mode: str, ranks: Ranks, amp_dtype: torch.dtype | None,
                compile: bool) -> torch.nn.Module:
    """`model` ready to train in `mode` ("none" | "ddp" | "fsdp"); the returned module is the one to call.

    FSDP2 shards `model` in place (it stays the module to call and to take state dicts from); its mixed
    precision policy replaces autocast, so a bf16 FSDP run has to call it without autocast (`uses_autocast`).
    """
    if compile:
        for block in model.layers:
            block.compile()
    if mode == "fsdp":
        policy = MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32 if amp_dtype else None)
        for block in model.layers:
            fully_shard(block, mp_policy=policy)
        return fully_shard(model, mp_policy=policy)
    if mode == "ddp":
        device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    return model


def uses_autocast(mode: str) -> bool:
    """Whether the forward runs under torch.autocast (FSDP2 casts parameters itself)."""
    return mode != "fsdp"


def set_gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Turn gradient all-reduce (DDP) / reduce-scatter (FSDP2) on for the last micro-batch of a step, off before."""
    if isinstance(model, DistributedDataParallel):
        model.require_backward_grad_sync = enabled
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)

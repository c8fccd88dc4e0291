"""The topology of a run: rank, world size and the few collectives the trainer needs.

This is the only module that knows about `torch.distributed` (docs/design.md, "Scale"). A single process
(no `torchrun`) gets `Topology()` with world size 1, whose collectives return their input: the
default pays nothing. Under `torchrun --nproc_per_node N -m rlvr train ...` the environment names the
rank and world size; `Topology.from_env` joins the process group, gloo on CPU and NCCL on CUDA, with a
collective timeout, so a rank that dies makes the others fail within that time instead of hanging.

How the trainer uses it (rlvr/train/trainer.py and the modules of its step): data parallelism that replicates the cheap data and splits
the expensive work. Each rank generates and scores the samples of its share of the step's prompts
(whole groups), then every rank receives every rank's scored samples, so rewards, dynamic sampling,
advantages (group statistics, REINFORCE++'s batch whitening, GAE's whitening), the KL controller and
the metrics are computed from the whole global batch, identically everywhere. The forward and backward
passes run on each rank's own rows only; per-token tensors they produce (old, reference log-probs,
values) are summed across ranks into the global batch, and the gradients are summed before the
optimizer step. The loss denominators are the global mini-batch's, so N ranks compute the update of
one process on the same global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class PeerFailed(RuntimeError):
    """Another rank failed first; this rank stops with a pointer to that rank's error."""

    stopped = True


@dataclass
class Topology:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """None for a single process; "gloo" or "nccl" once the process group is joined."""
    group: Any = field(default=None, repr=False, compare=False)
    """The process group of this topology's collectives (None: the default one)."""
    _gathered: set = field(default_factory=set, repr=False, compare=False)
    """ids of the FSDP units `full_params` holds gathered now (it nests: an inner call leaves them alone)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes logs, samples, plots and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, timeout_s: float = 600.0, device: str = "auto") -> Topology:
        """The topology torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK; world size 1 without them."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank=rank, world_size=world, local_rank=local, backend=backend)

    def with_own_group(self) -> Topology:
        """The same ranks with a process group of their own (gloo), for collectives issued from another thread
        (collection running ahead of training, rlvr.train.pipeline): collectives of one group run in the order
        every rank issues them, so two threads must not share one. Every rank must call it, in the same order."""
        if not self.distributed:
            return self
        import torch.distributed as dist

        return dataclasses.replace(self, group=dist.new_group(backend="gloo"), _gathered=set())

    def device(self, name: str) -> torch.device:
        """The device of this rank for a configured device name ("auto": its own GPU, else the CPU)."""
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.local_rank) if self.distributed else torch.device("cuda")
            return torch.device("cpu")
        if name == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return torch.device(name)

    # --- collectives (identity with one process) ------------------------------------------------------

    def all_reduce_sum_(self, tensor: Tensor) -> Tensor:
        """Sum `tensor` over ranks, in place; returns it."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def all_reduce_max(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return float(t.item())

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects; tensors are moved to the CPU first)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, _to_cpu(obj), group=self.group)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def sum_gradients_(self, parameters) -> None:
        """Sum every parameter's gradient over ranks, in place; a parameter without one gets zeros first, so
        that every rank sends buffers of the same layout."""
        if not self.distributed:
            return
        params = list(parameters)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self._sum_flat_([p.grad for p in params])

    def _sum_flat_(self, tensors: list[Tensor]) -> None:
        """Sum `tensors` over ranks in place, through one flat buffer per dtype (few collectives)."""
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            self.all_reduce_sum_(flat)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    # --- FSDP2 ---------------------------------------------------------------------------------------

    def shard_module(self, module: torch.nn.Module, reshard: str = "layer") -> torch.nn.Module:
        """Shard `module` with FSDP2 (`fully_shard`): each decoder layer one unit, the rest the root's.

        Parameters, gradients and optimizer state live sharded (dim 0, one chunk per rank). When the full
        parameters exist (train.fsdp_reshard):
        - "layer" (ZeRO-3): a decoder layer's parameters are all-gathered just before its forward and freed
          right after it, gathered again for its backward, and its gradients are reduce-scattered (summed
          over ranks) into the shards as soon as they exist; the root unit (embeddings, final norm, output
          projection) stays gathered from its first forward to the end of the backward. A step then holds
          one layer's full weights and gradients at a time besides the root. rlvr's own forward passes
          reach the units through their `rlvr_apply` method (`through_unit`), Hugging Face forwards
          through the modules' own hooks; the ranks must run the same sequence of forwards and backwards
          (the trainer pads each rank's micro-batches to the same count).
        - "step": the full parameters are gathered for a whole step (`full_params`) and the gradients summed
          into the shards before the optimizer step (`sum_gradients_into_shards_`): peak memory is one full
          copy of the weights and gradients, fewer and larger collectives.
        Generation with the hf engine and evaluation always run inside `full_params`. A no-op with one process.
        """
        if not self.distributed:
            return module
        from torch.distributed.device_mesh import init_device_mesh

        return fully_shard_model(module, init_device_mesh(self._comm_device().type, (self.world_size,)), reshard=reshard)

    @staticmethod
    def streams(module: torch.nn.Module | None) -> bool:
        """Whether `module` is sharded per layer (shard_module(reshard="layer")): FSDP2 reduces its gradients."""
        return module is not None and bool(getattr(module, "_rlvr_layered", False))

    @staticmethod
    def fsdp_units(modules) -> list:
        from torch.distributed.fsdp import FSDPModule

        return [m for module in modules if module is not None for m in module.modules() if isinstance(m, FSDPModule)]

    def unshard(self, modules) -> None:
        """Gather the full parameters of every FSDP unit of `modules` (a collective: all ranks call it)."""
        for unit in self.fsdp_units(modules):
            unit.unshard()

    def reshard(self, modules) -> None:
        for unit in self.fsdp_units(modules):
            unit.reshard()

    @contextlib.contextmanager
    def full_params(self, modules):
        """Within: the full parameters of the FSDP-sharded `modules` (nothing to do without FSDP), also
        across the forwards of per-layer sharded units, which keep them until the end (a rank may then run
        forwards alone: evaluation on rank 0). Nests: units an outer call gathered are left to it."""
        units = [u for u in (self.fsdp_units(modules) if self.distributed else []) if id(u) not in self._gathered]
        if not units:
            yield
            return
        for unit in units:
            unit.unshard()
            if self.streams(unit):
                unit.set_reshard_after_forward(False, recurse=False)
        self._gathered.update(id(u) for u in units)
        try:
            yield
        finally:
            self._gathered.difference_update(id(u) for u in units)
            for unit in units:
                if self.streams(unit):
                    unit.set_reshard_after_forward(unit._rlvr_reshard_after_forward, recurse=False)
                unit.reshard()

    def sum_gradients_into_shards_(self, module: torch.nn.Module) -> None:
        """For an FSDP module whose full parameters are gathered (`full_params`) and hold this rank's
        gradients: sum them over ranks, reshard, and give each sharded parameter its chunk of the sum as
        its gradient (FSDP2 shards dim 0 as torch.chunk does). The module is left resharded."""
        from torch.distributed.tensor import DTensor

        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for _, p in named]
        for _, p in named:
            p.grad = None
        self._sum_flat_(grads)
        self.reshard([module])
        sharded = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if [n for n, _ in sharded] != [n for n, _ in named]:
            raise RuntimeError("FSDP parameters changed order between the gathered and the sharded module")
        for (_, p), g in zip(sharded, grads):
            if isinstance(p, DTensor):
                chunks = list(g.chunk(self.world_size))
                local = chunks[self.rank] if self.rank < len(chunks) else g[0:0]
                p.grad = DTensor.from_local(local.contiguous(), p.device_mesh, p.placements, shape=p.shape,
                                            stride=p.stride())
            else:
                p.grad = g

    def save_optimizers(self, path: str | Path, optimizers: dict[str, tuple[torch.nn.Module, Any]]) -> None:
        """Write optimizer states with torch.distributed.checkpoint (DCP) into the directory `path`: under
        FSDP every rank writes its own shards (nothing is gathered), otherwise the one process writes all.
        Keys are parameter names, so `load_optimizers` reshards onto any number of ranks, sharded or not.
        A collective: every rank calls it with the same `path`."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = {name: get_optimizer_state_dict(module, optimizer) for name, (module, optimizer) in optimizers.items()}
        with _single_process_is_meant():
            dcp.save(state, checkpoint_id=str(path), no_dist=not self.distributed)

    def load_optimizers(self, path: str | Path, optimizers: dict[str, tuple[torch.nn.Module, Any]]) -> None:
        """Inverse of `save_optimizers`, on this run's ranks and sharding (DCP reshards as it reads)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        # The optimizer's own state layout (initialised by a zero step if still empty) is what DCP fills in.
        state = {name: get_optimizer_state_dict(module, optimizer) for name, (module, optimizer) in optimizers.items()}
        with _single_process_is_meant():
            dcp.load(state, checkpoint_id=str(path), no_dist=not self.distributed)
        for name, (module, optimizer) in optimizers.items():
            set_optimizer_state_dict(module, optimizer, optim_state_dict=state[name])

    def module_state(self, module: torch.nn.Module) -> dict:
        """The module's full state dict on the CPU (gathered from the shards for an FSDP module)."""
        if not self.fsdp_units([module]):
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def full_weights(self, module: torch.nn.Module, bucket_bytes: int = 256 << 20, keep=None):
        """(name, full tensor) for every entry of `module`'s state dict, streamed (for a rollout engine's weight
        reload). FSDP2's DTensor shards are gathered bucket by bucket: up to `bucket_bytes` of consecutive
        entries of one dtype, one all-gather of a flat buffer each, so only one bucket of full tensors is alive
        at a time. Every rank must consume the iterator to the end (the gathers are collectives). Parameters
        already gathered (inside `full_params`) and unsharded modules give their own tensors. The entries are
        the state dict's, read from the parameters and persistent buffers (not through `state_dict()`, whose
        FSDP2 hooks would leave gathered units sharded); entries sharing storage (tied embeddings:
        `lm_head.weight`) are each listed, as a Hugging Face state dict lists them. `keep(name)`: only the
        entries it accepts (e.g. a LoRA policy's adapter matrices)."""
        from torch.distributed.tensor import DTensor

        from rlvr.models.loading import state_entries

        bucket: list[tuple[str, Tensor]] = []
        size = 0
        for name, value in state_entries(module):
            if keep is not None and not keep(name):
                continue
            if not isinstance(value, DTensor):
                yield name, value.detach()
                continue
            if bucket and (value.dtype != bucket[0][1].dtype or size >= bucket_bytes):
                yield from self._gather_bucket(bucket)
                bucket, size = [], 0
            bucket.append((name, value))
            size += value.numel() * value.element_size()
        if bucket:
            yield from self._gather_bucket(bucket)

    def _gather_bucket(self, bucket: list[tuple[str, Tensor]]):
        """The full tensors of DTensors sharded on dim 0 as torch.chunk splits it (FSDP2), through one padded
        all-gather of every rank's local shards laid end to end."""
        import torch.distributed as dist

        w = self.world_size
        # rows of each tensor on each rank (torch.chunk may give fewer than w pieces: the last ranks hold none)
        rows = [([len(c) for c in torch.arange(v.shape[0]).chunk(w)] + [0] * w)[:w] for _, v in bucket]
        inner = [math.prod(v.shape[1:]) for _, v in bucket]  # elements per row
        lengths = [sum(r[k] * n for r, n in zip(rows, inner)) for k in range(w)]
        local = [v.to_local() for _, v in bucket]
        for (name, _), shard, r in zip(bucket, local, rows):
            if shard.shape[0] != r[self.rank]:
                raise RuntimeError(f"{name}: this rank holds {shard.shape[0]} rows, not the {r[self.rank]} of a dim-0 "
                                   "chunk; the weight gather assumes FSDP2's even dim-0 sharding")
        flat = torch.cat([s.reshape(-1) for s in local]) if local else torch.zeros(0)
        padded = flat.new_zeros(max(lengths))
        padded[: flat.numel()] = flat
        gathered = [torch.empty_like(padded) for _ in range(w)]
        dist.all_gather(gathered, padded)
        offsets = [0] * w
        for (name, value), r, n in zip(bucket, rows, inner):
            pieces = []
            for k in range(w):
                count = r[k] * n
                pieces.append(gathered[k][offsets[k] : offsets[k] + count].view(r[k], *value.shape[1:]))
                offsets[k] += count
            yield name, torch.cat(pieces)

    def load_module_state(self, module: torch.nn.Module, state: dict) -> None:
        if not self.fsdp_units([module]):
            module.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))

    def micro_batches(self, batch, rows: list[int], size: int | None, *, lockstep: bool) -> list[tuple[Any, bool]]:
        """(micro-batch, real) pairs: this rank's `rows` of `batch` in micro-batches of at most `size` rows
        (TrainBatch.micro_batches); with `lockstep` (per-layer FSDP, where every forward and backward is a
        collective) as many fillers (one row of the batch, its result unused) as make every rank run the same
        number of forwards and backwards. A list, not a generator: the count is agreed before the first forward."""
        pairs = [(mb, True) for mb in (batch.micro_batches(rows, size) if rows else [])]
        if lockstep:
            most = int(self.all_reduce_max(float(len(pairs))))
            if len(pairs) < most:
                pairs += [(batch.micro_batches([0], 1)[0], False)] * (most - len(pairs))
        return pairs

    def shard(self, n: int) -> range:
        """The contiguous share [start, stop) of n items (prompt groups) this rank owns: n // world_size
        or one more (the first ranks take the remainder), possibly empty."""
        w, r = self.world_size, self.rank
        return range(r * n // w, (r + 1) * n // w)

    # --- failures ------------------------------------------------------------------------------------

    def report_failure(self, run_dir, exc: BaseException) -> None:
        """Leave this rank's error where the other ranks look for it (run_dir/errors/rank<R>.txt), and its
        traceback beside it (traceback_rank<R>.txt: the terminal shows one line unless --debug)."""
        if not self.distributed:
            return
        folder = Path(run_dir) / "errors"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"traceback_rank{self.rank}.txt").write_text(
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        (folder / f"rank{self.rank}.txt").write_text(f"{type(exc).__name__}: {exc}")

    def peer_failure(self, run_dir, wait_s: float = 5.0) -> PeerFailed | None:
        """Another rank's reported error (waiting up to `wait_s` for its report to appear), or None."""
        if not self.distributed:
            return None
        folder = Path(run_dir) / "errors"
        deadline = time.monotonic() + wait_s
        while True:
            reports = sorted(p for p in folder.glob("rank*.txt") if p.name != f"rank{self.rank}.txt") if folder.is_dir() else []
            if reports:
                first = reports[0]
                return PeerFailed(f"{first.stem.replace('rank', 'rank ')} failed with {first.read_text()} (its traceback is "
                                  f"in its own output); rank {self.rank} stopped")
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def fully_shard_model(module: torch.nn.Module, mesh, *, reshard: str = "layer", mp_policy=None) -> torch.nn.Module:
    """`Topology.shard_module` on a given device mesh (also of one rank: benchmarks/gpu_figures.py), with an
    optional FSDP2 MixedPrecisionPolicy (e.g. bfloat16 parameters, float32 gradient reduction)."""
    if reshard not in ("layer", "step"):
        raise ValueError(f"reshard must be 'layer' or 'step', got {reshard!r}")
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    precision = {"mp_policy": mp_policy if mp_policy is not None else MixedPrecisionPolicy()}
    layered = reshard == "layer"
    decoder = module.get_decoder() if hasattr(module, "get_decoder") else None
    for layer in getattr(decoder, "layers", []):
        fully_shard(layer, mesh=mesh, reshard_after_forward=layered, **precision)
    fully_shard(module, mesh=mesh, reshard_after_forward=False, **precision)
    for unit in Topology.fsdp_units([module]):
        unit._rlvr_layered = layered
        unit._rlvr_reshard_after_forward = layered and unit is not module
        if layered:
            # The ranks' gradients are summed, not averaged: each rank's loss already carries the global
            # batch's denominators (a plain sum, which gloo has too; it has no pre-multiplied sum).
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)
            unit.rlvr_apply = types.MethodType(_apply, unit)
            register_fsdp_forward_method(unit, "rlvr_apply")
            continue
        # "step": rlvr gathers and scatters explicitly (full_params, sum_gradients_into_shards_); FSDP's own
        # hooks, which fire when a module's forward is called (the critic, HF forwards), must neither
        # reshard nor reduce behind its back.
        unit.set_reshard_after_forward(False, recurse=False)
        unit.set_requires_gradient_sync(False, recurse=False)
        if hasattr(unit, "set_reshard_after_backward"):
            unit.set_reshard_after_backward(False, recurse=False)
    return module


def _apply(self, fn, *args, **kwargs):
    """An FSDP unit's `rlvr_apply(fn, *args)`: fn(*args) between the unit's pre- and post-forward hooks
    (registered with register_fsdp_forward_method), so its parameters are gathered for fn and its backward."""
    return fn(*args, **kwargs)


@contextlib.contextmanager
def _single_process_is_meant():
    """torch.distributed.checkpoint warns on every single-process save and load that it assumes one process:
    in rlvr that is the plain case, said once in the docs, not a warning on every checkpoint."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        yield

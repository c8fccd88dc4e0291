"""Run under torchrun by test_distributed.py: per-layer FSDP2 sharding (train.fsdp_reshard=layer) streams the
decoder layers through rlvr's packed forward and sums the ranks' gradients into the shards."""

from __future__ import annotations

import copy
import sys

import torch
from torch.distributed.tensor import DTensor

from rlvr.models.logprobs import response_logprobs
from rlvr.models.tiny import make_tiny_model
from rlvr.train.distributed import Topology


def main(mode: str) -> None:
    topo = Topology.from_env()
    model, _ = make_tiny_model(seed=0)
    reference = copy.deepcopy(model)  # one process, unsharded: the gradient of the whole batch
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (4, 10), generator=g)
    mask = torch.ones_like(ids)
    lp, _ = response_logprobs(reference, ids, mask, 4, packed=True)
    lp.sum().backward()
    want = {n: p.grad for n, p in reference.named_parameters()}

    topo.shard_module(model, reshard=mode)
    layers = model.model.layers
    seen = []
    # While layer 2 runs: is layer 1 gathered (a plain tensor) or back in its shards (a DTensor)?
    layers[1].mlp.register_forward_pre_hook(lambda *a: seen.append(isinstance(layers[0].mlp.up_proj.weight, DTensor)))
    mine = ids[topo.rank * 2 : topo.rank * 2 + 2]  # each rank its own 2 rows: the gradients are summed
    with topo.full_params([] if mode == "layer" else [model]):
        lp, _ = response_logprobs(model, mine, torch.ones_like(mine), 4, packed=True)
        lp.sum().backward()
        if mode == "step":
            topo.sum_gradients_into_shards_(model)
    assert seen == [mode == "layer"], seen  # streamed: layer 1 was freed before layer 2 ran
    for name, p in model.named_parameters():
        assert isinstance(p, DTensor) and isinstance(p.grad, DTensor), name  # the optimizer sees shards
        torch.testing.assert_close(p.grad.full_tensor(), want[name], rtol=1e-5, atol=1e-6, msg=name)
    print(f"rank {topo.rank}: {mode} OK", flush=True)
    topo.close()


if __name__ == "__main__":
    main(sys.argv[1])

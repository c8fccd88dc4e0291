"""Run under torchrun by test_distributed.py: Topology.full_weights gathers FSDP2 shards to the full state dict."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard

from rlvr.models.tiny import make_tiny_model
from rlvr.train.distributed import Topology


def main() -> None:
    topo = Topology.from_env()
    model, _ = make_tiny_model(seed=0)  # tied embeddings: lm_head.weight is listed too
    full = {k: v.clone() for k, v in model.state_dict().items()}
    topo.shard_module(model)
    assert topo.fsdp_units([model])
    for bucket in (512, 256 << 20):  # many small buckets, and one
        got = dict(topo.full_weights(model, bucket_bytes=bucket))
        assert set(got) == set(full), set(got) ^ set(full)
        for name, value in full.items():
            assert torch.equal(got[name], value), name
    ids = torch.tensor([[5, 6, 7]])
    with topo.full_params([model]):  # also while the policy is gathered for a step, which it stays
        got = dict(topo.full_weights(model))
        assert all(torch.equal(got[k], v) for k, v in full.items())
        model(input_ids=ids)  # a forward of the gathered model: no DTensor left behind
    # dim 0 not divisible by the world size (3 rows on 2 ranks) and a 1-row tensor (the last rank holds none)
    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 3), nn.Linear(3, 1))
    want = {k: v.clone() for k, v in toy.state_dict().items()}
    for layer in toy:
        fully_shard(layer)
    fully_shard(toy)
    got = dict(topo.full_weights(toy, bucket_bytes=64))
    assert set(got) == set(want) and all(torch.equal(got[k], v) for k, v in want.items())
    print(f"rank {topo.rank}: full weights OK", flush=True)
    topo.close()


if __name__ == "__main__":
    main()

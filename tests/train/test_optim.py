from __future__ import annotations

import torch

from rlvr.train.optim import adamw


def test_fused_adamw_on_cpu_gives_the_default_update():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fast = adamw(params, lr=1e-2, weight_decay=0.1)
    plain = torch.optim.AdamW(copies, lr=1e-2, weight_decay=0.1, foreach=False)
    assert fast.defaults["fused"] is True
    for step in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, copies, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fast.step()
        plain.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_no_fused_kernel_for_integer_or_meta_parameters():
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    assert adamw([meta], lr=1e-3).defaults["fused"] is None

"""PPO's value model (rlvr.train.critic): the packed forward gives the padded one's values and gradients."""

from __future__ import annotations

import pytest
import torch

from rlvr.models.tiny import make_tiny_model
from rlvr.train.critic import make_value_model


def _batch(tokenizer, prompts, responses):
    p, t = max(map(len, prompts)), max(map(len, responses))
    ids = torch.zeros(len(prompts), p + t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (a, b) in enumerate(zip(prompts, responses)):
        ids[i, p - len(a) : p], mask[i, p - len(a) : p] = torch.tensor(a), 1
        ids[i, p : p + len(b)], mask[i, p : p + len(b)] = torch.tensor(b), 1
    return ids, mask, t


@pytest.mark.parametrize("checkpoint_activations", [False, True])
def test_packed_and_padded_critic_forwards_agree_in_values_and_gradients(checkpoint_activations):
    policy, tok = make_tiny_model(seed=3, num_layers=2)
    critic = make_value_model(policy, checkpoint_activations=checkpoint_activations)
    torch.nn.init.normal_(critic.head.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    # two samples of one prompt (packed runs it once), another prompt, responses of different lengths
    ids, mask, t = _batch(tok, [tok.encode("abc"), tok.encode("hello"), tok.encode("abc")],
                          [tok.encode("xy"), tok.encode("z"), tok.encode("qrs")])
    grads = {}
    for packed in (None, False):
        critic.zero_grad(set_to_none=True)
        values = critic(ids, mask, t, packed=packed)
        (values * torch.arange(1.0, values.numel() + 1).view_as(values)).sum().backward()
        grads[packed] = (values.detach(), {n: p.grad.clone() for n, p in critic.named_parameters() if p.grad is not None})
    (v_packed, g_packed), (v_padded, g_padded) = grads[None], grads[False]
    torch.testing.assert_close(v_packed, v_padded, rtol=1e-5, atol=1e-5)
    assert torch.equal(v_packed[mask[:, -t:] == 0], torch.zeros(int((mask[:, -t:] == 0).sum())))  # 0 on padding
    assert g_packed.keys() == g_padded.keys() and len(g_packed) > 3
    for name in g_packed:
        scale = float(g_padded[name].abs().max())  # float32 rounding of sums in another order: relative to the scale
        torch.testing.assert_close(g_packed[name], g_padded[name], rtol=1e-4, atol=1e-6 * scale, msg=name)

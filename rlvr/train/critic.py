"""PPO's value model: a scalar head on its own copy of the policy's backbone.

V(s_t) is read at the position whose hidden state predicts response token t (the state after the prompt
and the first t response tokens), so values line up with `logprobs` [N, T].
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rlvr.models.logprobs import backbone_hidden_states


class ValueModel(nn.Module):
    def __init__(self, policy: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(policy.get_decoder())
        hidden = policy.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # A zero head starts every value at 0, so the first advantages are plain reward-to-go.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.config = policy.config

    def get_decoder(self) -> nn.Module:
        return self.backbone

    def forward(self, input_ids: Tensor, attention_mask: Tensor, num_response_tokens: int) -> Tensor:
        """Values [N, T] of the states before each response token."""
        hidden = backbone_hidden_states(self, input_ids, attention_mask)  # [N, L, H]
        length = input_ids.shape[1]
        start = length - num_response_tokens - 1
        h = hidden[:, start : length - 1]  # [N, T, H]
        return self.head(h).squeeze(-1)

    def state_dict_for_save(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}


def make_value_model(policy: nn.Module) -> ValueModel:
    model = ValueModel(policy)
    model.to(next(policy.parameters()).device)
    return model


@torch.no_grad()
def compute_values(critic: ValueModel, input_ids: Tensor, attention_mask: Tensor, num_response_tokens: int) -> Tensor:
    return critic(input_ids, attention_mask, num_response_tokens)

"""PPO's value model: a scalar head on its own copy of the policy's backbone.

V(s_t) is read at the position whose hidden state predicts response token t (the state after the prompt
and the first t response tokens), so values line up with `logprobs` [N, T].
"""

from __future__ import annotations

import copy

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


def make_value_model(policy: nn.Module) -> ValueModel:
    model = ValueModel(policy)
    model.to(next(policy.parameters()).device)
    return model

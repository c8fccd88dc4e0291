"""PPO's value model: a scalar head on its own copy of the policy's backbone.

V(s_t) is read at the position whose hidden state predicts response token t (the state after the prompt
and the first t response tokens), so values line up with `logprobs` [N, T].

For Llama-family backbones the critic runs the packed forward the policy uses (rlvr.models.llama: each
distinct prompt once, responses without padding), so its activations, kept for the backward pass, cover
the real tokens only; other models use the padded forward. Values on padding are 0 either way.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

from torch import Tensor, nn

from rlvr.models.llama import packed_path_problem, predicting_hidden_packed
from rlvr.models.logprobs import backbone_hidden_states


class ValueModel(nn.Module):
    def __init__(self, policy: nn.Module, *, checkpoint_activations: bool = False):
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        self.backbone = copy.deepcopy(policy.get_decoder())
        hidden = policy.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # A zero head starts every value at 0, so the first advantages are plain reward-to-go.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.config = policy.config

    def get_decoder(self) -> nn.Module:
        return self.backbone

    def _packed_view(self) -> SimpleNamespace:
        """What the packed forward reads of a *ForCausalLM (config, .model, .lm_head, .training, .parameters)."""
        return SimpleNamespace(config=self.config, model=self.backbone, lm_head=self.head, training=self.training,
                               parameters=self.backbone.parameters)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, num_response_tokens: int, *,
                packed: bool | None = None) -> Tensor:
        """Values [N, T] of the states before each response token (0 on padding). packed: as in
        `response_logprobs` (None: the packed forward wherever the backbone allows it)."""
        t = num_response_tokens
        counted = attention_mask[:, -t:].bool()
        view = self._packed_view()
        problem = packed_path_problem(view, attention_mask, t) if packed is not False else "packed=False"
        if problem is None:
            rows = predicting_hidden_packed(view, input_ids, attention_mask, t,
                                            checkpoint_layers=self.checkpoint_activations)  # [M, H]
            values = self.head(rows).squeeze(-1)
            out = values.new_zeros(counted.shape)
            return out.masked_scatter(counted, values)
        hidden = backbone_hidden_states(self, input_ids, attention_mask)  # [N, L, H]
        length = input_ids.shape[1]
        h = hidden[:, length - t - 1 : length - 1]  # [N, T, H]
        values = self.head(h).squeeze(-1)
        return values.masked_fill(~counted, 0.0)


def make_value_model(policy: nn.Module, *, checkpoint_activations: bool = False) -> ValueModel:
    model = ValueModel(policy, checkpoint_activations=checkpoint_activations)
    model.to(next(policy.parameters()).device)
    return model

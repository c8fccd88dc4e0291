"""Models: loading (embedded name | Hugging Face hub id | local directory), memory-efficient log-probs
of a batch, and tiny random models for hermetic tests."""

from __future__ import annotations

from rlvr.models.logprobs import backbone_hidden_states, position_ids_from_mask, response_logprobs
from rlvr.models.tiny import DEFAULT_CHARS, make_tiny_model, make_tiny_model_dir, make_tiny_tokenizer

__all__ = [
    "DEFAULT_CHARS",
    "backbone_hidden_states",
    "make_tiny_model",
    "make_tiny_model_dir",
    "make_tiny_tokenizer",
    "position_ids_from_mask",
    "response_logprobs",
]

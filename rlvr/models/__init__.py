"""Models: loading (embedded name | Hugging Face hub id | local directory), memory-efficient log-probs
of a batch, and tiny random models for hermetic tests."""

from __future__ import annotations

from rlvr.models.embedded import EMBEDDED_MODELS, EmbeddedModelSpec, ModelLoadError, cache_entry, pull
from rlvr.models.loading import load_model, load_tokenizer, prepare_tokenizer, save_model
from rlvr.models.logprobs import backbone_hidden_states, position_ids_from_mask, response_logprobs
from rlvr.models.tiny import DEFAULT_CHARS, make_tiny_model, make_tiny_model_dir, make_tiny_tokenizer

__all__ = [
    "DEFAULT_CHARS",
    "EMBEDDED_MODELS",
    "EmbeddedModelSpec",
    "ModelLoadError",
    "backbone_hidden_states",
    "cache_entry",
    "load_model",
    "load_tokenizer",
    "make_tiny_model",
    "make_tiny_model_dir",
    "make_tiny_tokenizer",
    "position_ids_from_mask",
    "prepare_tokenizer",
    "pull",
    "response_logprobs",
    "save_model",
]

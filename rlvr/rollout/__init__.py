"""Rollout engines: generate responses (token ids, sampler log-probs, finish reasons) for prompts.

`get_engine(name, model, tokenizer, **kwargs)` builds a registered engine; "hf" runs everywhere.
A vLLM engine is not provided yet.
"""

from __future__ import annotations

from rlvr.rollout import hf as _hf  # noqa: F401  (registers "hf")
from rlvr.rollout.base import ENGINES, FINISH_REASONS, RolloutBatch, RolloutEngine, SamplingParams, get_engine
from rlvr.rollout.hf import HFEngine


@ENGINES.register("vllm")
def _vllm_engine(model, tokenizer, **kwargs):
    """vLLM (rlvr.rollout.vllm), imported only when chosen."""
    from rlvr.rollout.vllm import VLLMEngine

    return VLLMEngine(model, tokenizer, **kwargs)


__all__ = ["ENGINES", "FINISH_REASONS", "HFEngine", "RolloutBatch", "RolloutEngine", "SamplingParams", "get_engine"]

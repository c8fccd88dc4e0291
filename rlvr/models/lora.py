"""LoRA adapters through `peft` (the `peft` extra, imported only when LoRA is asked for).

`apply_lora` injects LoRA layers into a Hugging Face causal LM and returns the `PeftModel`. The trainer,
the rollout engine and the log-prob forward all use `peft_model.get_base_model()`: the same
`*ForCausalLM` object, whose linear layers now compute W x + (alpha / r) B A x, so every fast path
(packed forward, fast decoder) keeps working unchanged. Only the adapter matrices require gradient.

- Reference model: the base weights with the adapters switched off (`reference_mode`), so a KL term
  costs no second copy of the model.
- Checkpoints hold the adapter only (`save_adapter`: adapter_config.json + adapter_model.safetensors,
  plus the tokenizer); `load_adapter` puts it back on the base model; `merged_model` folds the
  adapters into a plain Hugging Face model (what `rlvr export` writes, loadable by transformers and vLLM).

Defaults follow "LoRA Without Regret" (Schulman et al., Thinking Machines 2025): adapters on all linear
layers (attention and MLP), alpha 32, and a learning rate about 10x the full fine-tuning one.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

from torch import nn

ADAPTER_CONFIG = "adapter_config.json"


def _peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the peft package: pip install 'rlvr[peft]' (or pip install peft)") from err
    return peft


def apply_lora(model: nn.Module, *, rank: int = 32, alpha: float = 32.0, dropout: float = 0.0,
               target_modules: str | list[str] = "all-linear"):
    """`model` with LoRA adapters (a `peft.PeftModel`); the base weights are frozen."""
    peft = _peft()
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def load_adapter(base_model: nn.Module, path: str | Path, *, trainable: bool = True):
    """The adapter saved at `path` on `base_model` (a `peft.PeftModel`)."""
    peft = _peft()
    return peft.PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def reference_mode(peft_model):
    """Context in which the model computes with its base weights only (the adapters switched off)."""
    if peft_model is None:
        return contextlib.nullcontext()
    return peft_model.disable_adapter()


def save_adapter(peft_model, tokenizer, path: str | Path, state_dict: dict | None = None) -> Path:
    """Write the adapter (and the tokenizer) to `path` atomically; an existing `path` is replaced.
    `state_dict`: the adapter's full tensors, under the PeftModel's names, when the model's own are shards
    (FSDP2: gathered by rlvr.train.distributed.Topology.full_weights)."""
    from rlvr.models.loading import save_pretrained_atomic

    return save_pretrained_atomic(peft_model, tokenizer, path, state_dict=state_dict)


def is_adapter_weight(name: str) -> bool:
    """A state-dict entry of the adapters (what an adapter checkpoint holds)."""
    return ".lora_" in name


def merged_model(peft_model) -> nn.Module:
    """A plain Hugging Face model with the adapters folded into its weights (the trained model is untouched)."""
    return copy.deepcopy(peft_model).merge_and_unload()


def has_lora(model: nn.Module) -> bool:
    """Whether `model` holds injected LoRA layers (a PeftModel, or the base model a PeftModel wraps)."""
    return any(".lora_A." in name for name, _ in model.named_parameters())


def merged_weights(model: nn.Module):
    """(name, tensor) of the merged model's state dict, under the plain Hugging Face names, streamed: each
    adapted weight is W + the active adapters' delta (peft's get_delta_weight: scale * B A), computed one
    layer at a time; the model itself is left as it is (no merge and unmerge, which would round the base
    weights). `model`: a PeftModel or its base model. The names and values equal
    merged_model(peft_model).state_dict()'s (tests/train/test_lora.py)."""
    from peft.tuners.lora import LoraLayer

    from rlvr.models.loading import state_entries

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, tensor in state_entries(base):  # (no state_dict hooks: an FSDP2 policy gathered for a step stays so)
        if ".lora_" in name:  # the adapter matrices themselves (lora_A, lora_B, lora_embedding_*, lora_magnitude...)
            continue
        if ".base_layer." not in name:
            yield name, tensor.detach()
            continue
        owner, _, leaf = name.partition(".base_layer.")
        layer = layers[owner]
        value = tensor.detach()
        if leaf == "weight" and not layer.merged:
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    value = value + layer.get_delta_weight(adapter).detach().to(value.dtype)
        yield f"{owner}.{leaf}", value

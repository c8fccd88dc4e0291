"""Tiny random Llama models with a character-level tokenizer, for hermetic tests.

Everything is built in-process (no network, no files unless asked): a `LlamaForCausalLM` in float32
with tied input/output embeddings and grouped-query attention (like SmolLM2), and a
`PreTrainedTokenizerFast` with one token per character and a ChatML chat template, so code written
against the embedded SmolLM2 runs unchanged on a model that takes milliseconds per step.

Vocabulary (ids are fixed): 0 `<pad>`, 1 `<|im_start|>`, 2 `<|im_end|>` (eos), 3 `<unk>` (any character
outside `chars`), then one id per character of `chars` in order. For strings made of `chars` only,
`tokenizer.decode(tokenizer.encode(s)) == s`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DEFAULT_CHARS = (
    "0123456789"
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    " \n"
    "+-*/=()<>.,:;!?#'\"_"
)

PAD_TOKEN = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, UNK_TOKEN)

# ChatML as SmolLM2-Instruct writes it, minus its default system message (tiny prompts stay short).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_tokenizer(chars: str = DEFAULT_CHARS) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character of `chars`, plus the special tokens.

    Left padding (rlvr's prompt layout); pad is `<pad>`, distinct from eos.
    """
    if len(set(chars)) != len(chars):
        duplicates = sorted({c for c in chars if chars.count(c) > 1})
        raise ValueError(f"chars must not repeat a character; repeated: {duplicates!r}")
    if not chars:
        raise ValueError("chars must contain at least one character")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab[c] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    # Any single character, newline included: one pre-token per character.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # WordLevel would otherwise join tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=[IM_START],
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_model(
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    max_position_embeddings: int = 512,
    chars: str = DEFAULT_CHARS,
    arch: str = "llama",
    num_experts: int = 8,
    top_k: int = 2,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random float32 `LlamaForCausalLM` and its character-level tokenizer (see the module docstring).

    The weights depend only on `seed` and the shape arguments; the global torch RNG is left untouched.
    Key/value heads are half the query heads when `num_heads` is even (grouped-query attention, as in
    SmolLM2), and the output projection is tied to the input embedding.
    arch="qwen3_moe": a `Qwen3MoeForCausalLM` instead, every layer a mixture of `num_experts` experts with
    `top_k` routed per token (renormalised top-k weights), for the routing-replay tests.
    """
    if hidden_size % num_heads != 0:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    tokenizer = make_tiny_tokenizer(chars)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads // 2 if num_heads % 2 == 0 else num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=ids[IM_END],
        pad_token_id=ids[PAD_TOKEN],
    )
    if arch == "llama":
        config, model_class = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "qwen3_moe":
        from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

        config = Qwen3MoeConfig(**common, head_dim=hidden_size // num_heads, num_experts=num_experts,
                                num_experts_per_tok=top_k, moe_intermediate_size=hidden_size, norm_topk_prob=True,
                                decoder_sparse_step=1, mlp_only_layers=[])
        model_class = Qwen3MoeForCausalLM
    else:
        raise ValueError(f"unknown tiny model arch {arch!r}; known: llama, qwen3_moe")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).to(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN])
    model.eval()
    return model, tokenizer


def make_tiny_model_dir(path: str | Path, **kwargs) -> Path:
    """Save `make_tiny_model(**kwargs)` in Hugging Face format (safetensors) at `path`; returns the path."""
    from rlvr.models.loading import save_model

    model, tokenizer = make_tiny_model(**kwargs)
    return save_model(model, tokenizer, path)

"""Load and save models: an embedded name, a local Hugging Face directory, or a Hugging Face hub id.

`load_model(name_or_path)` resolves, in this order:
1. an embedded name (`EMBEDDED_MODELS`, e.g. `smollm2-135m-instruct`): fetched and converted once
   into the rlvr cache (see rlvr.models.embedded), then loaded from there;
2. an existing directory: loaded as a Hugging Face checkpoint, without any network access;
3. something shaped like a hub id (`org/name`): `from_pretrained` from the Hugging Face hub (and its
   own cache, `HF_HOME`); a failure says what failed and suggests a local path or an embedded name.

Tokenizers always come back with a pad token and left padding (rlvr's prompt layout). A tokenizer
without a pad token gets its eos token as pad: rlvr never infers a mask from pad ids (it carries
`attention_mask` and `loss_mask`), so sharing the id is harmless, and no embedding row is added.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from rlvr.models.embedded import EMBEDDED_MODELS, ModelLoadError, pull

# One "/" between two names of letters, digits, "-", "_", "."; not starting with "." or "/".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """(model, tokenizer) for an embedded name, a local directory or a hub id (module docstring).

    The model is a `*ForCausalLM` in `dtype` (a torch dtype or its name, e.g. "bfloat16") on `device`,
    in eval mode. `cache_dir` is rlvr's cache for embedded models (default `$RLVR_CACHE_DIR` or
    `~/.cache/rlvr`); hub downloads stay in the Hugging Face cache. `trust_remote_code` is passed to
    transformers and stays off unless asked for.
    """
    from transformers import AutoModelForCausalLM

    dtype = _as_dtype(dtype)
    source, from_hub = _resolve(name_or_path, cache_dir)
    try:
        kwargs = _from_pretrained_kwargs(from_hub, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with what failed and what to do
        raise _load_error("model", name_or_path, from_hub, err) from err
    tokenizer = _load_tokenizer(source, from_hub, name_or_path, trust_remote_code)
    return model.to(device).eval(), tokenizer


def load_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """The tokenizer of an embedded name, a local directory or a hub id, with a pad token and left padding."""
    source, from_hub = _resolve(name_or_path, cache_dir)
    return _load_tokenizer(source, from_hub, name_or_path, trust_remote_code)


def _load_tokenizer(source: str, from_hub: bool, name_or_path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_from_pretrained_kwargs(from_hub, trust_remote_code))
    except Exception as err:  # noqa: BLE001 - re-raised with what failed and what to do
        raise _load_error("tokenizer", name_or_path, from_hub, err) from err
    return prepare_tokenizer(tokenizer)


def _from_pretrained_kwargs(from_hub: bool, trust_remote_code: bool) -> dict:
    # A local directory must never fall back to the network (a typo would otherwise hang on retries).
    return {"trust_remote_code": trust_remote_code} | ({} if from_hub else {"local_files_only": True})


def prepare_tokenizer(tokenizer):
    """Give `tokenizer` a pad token (its eos token, else its unk token) if it has none; pad on the left."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelLoadError(
                f"{type(tokenizer).__name__} has no pad, eos or unk token to pad with; set tokenizer.pad_token"
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "left"
    return tokenizer


def save_model(model, tokenizer, path: str | os.PathLike, state_dict: dict | None = None) -> Path:
    """Write `model` and `tokenizer` to `path` in Hugging Face format (safetensors); returns the path.

    The checkpoint is written to a temporary sibling directory and renamed into place, so `path` is
    never seen half-written; an existing `path` is replaced. Loadable by `load_model(path)`,
    `from_pretrained(path)` and vLLM. `state_dict`: the weights to write instead of the model's own (the
    gathered full weights of an FSDP-sharded model).
    """
    return save_pretrained_atomic(model, tokenizer, path, after=_compat_for_older_readers, state_dict=state_dict)


def save_pretrained_atomic(model, tokenizer, path: str | os.PathLike, after=None, state_dict: dict | None = None) -> Path:
    """`model.save_pretrained` (and the tokenizer's) into a temporary sibling of `path`, then renamed
    into place: `path` is never seen half-written, and an existing one is replaced. `after(staged)` may
    adjust the staged files first. Also used for LoRA adapters (rlvr.models.lora)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        staged = work / "checkpoint"
        model.save_pretrained(staged, **({} if state_dict is None else {"state_dict": state_dict}))
        if tokenizer is not None:
            tokenizer.save_pretrained(staged)
        if after is not None:
            after(staged)
        if path.exists():
            os.replace(path, work / "previous")
        os.replace(staged, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _resolve(name_or_path: str | os.PathLike, cache_dir) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a hub id)."""
    name = os.fspath(name_or_path)
    if name in EMBEDDED_MODELS:
        return str(pull(name, cache_dir=cache_dir)), False
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is a directory but not a Hugging Face model directory (it has no config.json)"
            )
        return str(path), False
    if _HUB_ID.match(name) and not path.exists():
        _check_hub_reachable(name)
        return name, True
    raise ModelLoadError(_unknown_message(name, path))


def _check_hub_reachable(hub_id: str) -> None:
    """Fail at once, not after minutes of retries, when a hub id is neither cached nor downloadable."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return  # offline mode: transformers reads the cache and says so itself
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
            return  # cached: loads without the network
    except Exception:  # noqa: BLE001 - an older huggingface_hub: go on to the network check
        pass
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise ModelLoadError(
            f"cannot load {hub_id!r}: it is not in the Hugging Face cache and {host} cannot be reached from this "
            f"machine. Download it where there is network (huggingface-cli download {hub_id}) and pass the "
            f"local directory, or use an embedded model ({', '.join(EMBEDDED_MODELS)})."
        ) from None


def _unknown_message(name: str, path: Path) -> str:
    if path.exists():
        what = f"{name!r} is a file, not a model directory"
    elif os.sep in name or name.startswith((".", "~")):
        what = f"no such directory: {name!r}"
    else:
        what = f"unknown model {name!r}"
    close = difflib.get_close_matches(name.lower(), list(EMBEDDED_MODELS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{what}{hint}. Give an embedded name ({', '.join(EMBEDDED_MODELS)}), a local directory in "
        "Hugging Face format (with config.json), or a Hugging Face hub id such as "
        "'HuggingFaceTB/SmolLM2-135M-Instruct' (needs hub access)."
    )


def _load_error(what: str, name_or_path, from_hub: bool, err: Exception) -> ModelLoadError:
    reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    if from_hub:
        return ModelLoadError(
            f"could not load the {what} {os.fspath(name_or_path)!r} from the Hugging Face hub ({reason}). "
            "Without hub access, pass a local directory in Hugging Face format or an embedded name "
            f"({', '.join(EMBEDDED_MODELS)})."
        )
    return ModelLoadError(f"could not load the {what} from {os.fspath(name_or_path)!r} ({reason})")


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
    return resolved


def _compat_for_older_readers(path: Path) -> None:
    """Keep a transformers-5 checkpoint readable by transformers 4 (e.g. a vLLM in another environment).

    transformers 5 writes the rope base only inside `rope_parameters` and names the fast tokenizer class
    `TokenizersBackend`; version 4 reads `rope_theta` at the top level (silently defaulting to 10000
    without it) and knows the class as `PreTrainedTokenizerFast`, which version 5 also accepts.
    """
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tok_file = path / "tokenizer_config.json"
    if tok_file.is_file():
        tok_config = json.loads(tok_file.read_text())
        if tok_config.get("tokenizer_class") == "TokenizersBackend":
            tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
            tok_file.write_text(json.dumps(tok_config, indent=2, sort_keys=True) + "\n")


def state_entries(module):
    """(name, tensor) of every state-dict entry of `module`, read from the module itself: its parameters
    (shared ones under each of their names, as a Hugging Face state dict lists a tied `lm_head.weight`), then
    its persistent buffers. Unlike `state_dict()` this runs no hooks: FSDP2's would hand back shards (and
    reshard the units a step has gathered)."""
    yield from module.named_parameters(remove_duplicate=False)
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buffer

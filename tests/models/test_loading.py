from __future__ import annotations

import json

import pytest
import torch
import transformers

from rlvr.models.loading import ModelLoadError, load_model, load_tokenizer, prepare_tokenizer, save_model
from rlvr.models.tiny import make_tiny_model, make_tiny_model_dir


def logits_of(model, tokenizer, text="What is 2+3?"):
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        return model(ids).logits


def test_round_trip_by_path_gives_identical_logits(tmp_path, tiny, no_hub):
    model, tok = tiny
    path = save_model(model, tok, tmp_path / "ckpt")
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    loaded, loaded_tok = load_model(str(path))
    assert torch.equal(logits_of(loaded, loaded_tok), logits_of(model, tok))
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # still tied
    assert loaded_tok.decode(loaded_tok.encode("a+b=c\n")) == "a+b=c\n"
    assert loaded_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == (
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    )
    assert (loaded_tok.pad_token, loaded_tok.eos_token, loaded_tok.padding_side) == ("<pad>", "<|im_end|>", "left")
    assert loaded.generation_config.eos_token_id == 2
    assert not loaded.training


def test_plain_transformers_loads_a_saved_checkpoint(tmp_path, no_hub):
    path = make_tiny_model_dir(tmp_path / "tiny", seed=3)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    expected, _ = make_tiny_model(seed=3)
    assert torch.equal(logits_of(model, tok), logits_of(expected, tok))
    config = json.loads((path / "config.json").read_text())
    # readable by transformers 4 too: rope base at the top level, a tokenizer class both versions know
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_save_replaces_existing_checkpoint_and_leaves_no_temp(tmp_path, no_hub):
    target = tmp_path / "ckpt"
    make_tiny_model_dir(target, seed=1)
    (target / "stale.txt").write_text("from the previous checkpoint")
    make_tiny_model_dir(target, seed=2)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    model, tok = load_model(target)  # a PathLike works too
    expected, _ = make_tiny_model(seed=2)
    assert torch.equal(logits_of(model, tok), logits_of(expected, tok))


def test_dtype_and_device(tmp_path, no_hub):
    path = make_tiny_model_dir(tmp_path / "tiny")
    model, _ = load_model(path, dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype 'float33'"):
        load_model(path, dtype="float33")


def test_load_tokenizer_alone(tmp_path, no_hub):
    path = make_tiny_model_dir(tmp_path / "tiny")
    tok = load_tokenizer(str(path))
    assert tok.pad_token_id == 0 and tok.padding_side == "left"


def test_missing_pad_token_becomes_eos():
    _, tok = make_tiny_model()
    tok.pad_token = None
    tok.padding_side = "right"
    prepare_tokenizer(tok)
    assert (tok.pad_token, tok.pad_token_id, tok.padding_side) == ("<|im_end|>", 2, "left")


def test_unknown_name_lists_embedded_models_and_alternatives(no_hub):
    with pytest.raises(ModelLoadError) as err:
        load_model("smollm2-135m-instruc")
    message = str(err.value)
    assert "unknown model 'smollm2-135m-instruc'" in message
    assert "did you mean 'smollm2-135m-instruct'" in message
    assert "local directory" in message and "hub id" in message


def test_missing_directory_and_non_model_directory(tmp_path, no_hub):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(str(tmp_path / "nope" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file, not a model directory"):
        load_model(tmp_path / "file.bin")


def test_hub_failure_says_what_failed_and_what_to_do(monkeypatch, no_hub):
    calls = []

    def offline(name, **kwargs):
        calls.append((name, kwargs))
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(ModelLoadError) as err:
        load_model("SomeOrg/Some-Model-1B", trust_remote_code=False)
    message = str(err.value)
    assert "could not load the model 'SomeOrg/Some-Model-1B' from the Hugging Face hub" in message
    assert "OSError: We couldn't connect" in message
    assert "local directory" in message and "smollm2-135m-instruct" in message
    assert calls == [("SomeOrg/Some-Model-1B", {"dtype": torch.float32, "trust_remote_code": False})]


def test_hub_tokenizer_failure(monkeypatch, no_hub):
    def offline(name, **kwargs):
        raise OSError("no connection")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ModelLoadError, match="could not load the tokenizer 'SomeOrg/Model' from the Hugging Face hub"):
        load_tokenizer("SomeOrg/Model")


def test_trust_remote_code_is_passed_only_when_asked(monkeypatch, tmp_path, no_hub):
    path = make_tiny_model_dir(tmp_path / "tiny")
    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(name, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        return real(name, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(path)
    load_model(path, trust_remote_code=True)
    assert seen == [False, True]

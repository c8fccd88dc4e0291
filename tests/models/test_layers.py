"""Internal layer policies (rlvr.models.layers) and the commands around them (`rlvr analyze layers`, `rlvr models tiny`)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlvr.cli import main
from rlvr.models.layers import layer_entropies, layer_hidden_states
from rlvr.models.tiny import make_tiny_model


def test_layer_entropies_match_a_hand_computation():
    model, tokenizer = make_tiny_model(seed=2, num_layers=3)
    ids = torch.tensor([tokenizer.encode("abcdefg"), tokenizer.encode("xyz=123")])
    mask = torch.ones_like(ids)
    mask[0, -1] = 0  # a shorter response
    t = 3
    got = layer_entropies(model, ids, mask, t)
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        counted = mask[:, -t:].bool()
        for layer in range(1, 3):  # below the top, HF's hidden_states[l] is the raw stream after layer l
            for key, norm in (("raw", False), ("final_norm", True)):
                h = hs[layer][:, -t - 1 : -1][counted]
                p = torch.softmax(model.lm_head(model.model.norm(h) if norm else h).float(), -1)
                want = float(-(p * p.log()).sum(-1).mean())
                assert got[key][layer - 1] == pytest.approx(want, rel=1e-5)
    assert len(got["raw"]) == len(got["final_norm"]) == 3
    assert all(0 <= v <= math.log(model.config.vocab_size) + 1e-4 for v in got["raw"] + got["final_norm"])


def test_the_backbone_stops_after_the_layer_asked_for():
    model, tokenizer = make_tiny_model(seed=0, num_layers=3)
    ids = torch.tensor([tokenizer.encode("hello")])
    called = []
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_hook(lambda m, a, o, i=i: called.append(i))
    layer_hidden_states(model, ids, torch.ones_like(ids), 2)
    assert called == [0, 1]
    with pytest.raises(ValueError, match="use 1 .. 3"):
        layer_hidden_states(model, ids, torch.ones_like(ids), 4)


def test_rlvr_analyze_layers_writes_the_table_json_and_figure(tiny_dir, tmp_path, capsys):
    out = tmp_path / "layers"
    assert main(["analyze", "layers", str(tiny_dir), "--task", "symbol", "--limit", "3", "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "H(pi_l), raw h_l" in printed and "norm(h_l)" in printed
    report = json.loads((out / "layers.json").read_text())
    assert report["layers"] == 2 and len(report["entropy_raw"]) == len(report["entropy_final_norm"]) == 2
    assert report["response_tokens"] > 0 and (out / "layers.png").stat().st_size > 0
    assert main(["analyze", "layers", str(tiny_dir), "--task", "arithmetc"]) == 2
    assert "unknown task 'arithmetc'" in capsys.readouterr().err


def test_rlvr_models_tiny_writes_a_loadable_moe(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from rlvr.models.moe import find_routers

    assert main(["models", "tiny", str(tmp_path / "moe"), "--arch", "qwen3_moe", "--hidden", "32", "--heads", "2",
                 "--experts", "4", "--top-k", "2"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "moe")
    routers = find_routers(model)
    assert type(model).__name__ == "Qwen3MoeForCausalLM" and len(routers) == 2 and routers[0].num_experts == 4

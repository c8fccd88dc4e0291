"""Bottom-up Policy Optimization (algorithm.layer_policy): the objective on an internal layer policy first."""

from __future__ import annotations

import pytest
import torch

from rlvr.models.logprobs import response_logprobs
from rlvr.models.tiny import make_tiny_model, make_tiny_model_dir
from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config
from tests.train.test_learning import learning_curve


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    """A 4-layer tiny Llama, so that there are layers above and below the layer policy's."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny4") / "model", seed=0, num_layers=4)


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("final_norm", [False, True])
def test_only_layers_up_to_k_and_the_unembedding_learn_then_the_switch_trains_all(tiny4, tmp_path, final_norm):
    cfg = tiny_config(tiny4, tmp_path / "run", "algorithm.layer_policy.layer=2", "algorithm.layer_policy.steps=2",
                      f"algorithm.layer_policy.final_norm={str(final_norm).lower()}", "optim.lr=1e-2",
                      "train.mini_batches=2")
    trainer = build(cfg)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    start = {k: v.clone() for k, v in trainer.models.policy.state_dict().items()}
    metrics = [trainer.step(stream, step) for step in (1, 2)]
    mid = {k: v.clone() for k, v in trainer.models.policy.state_dict().items()}
    changed = _changed(start, mid)
    below = {k for k in start if k.startswith(("model.layers.0.", "model.layers.1."))}
    above = {k for k in start if k.startswith(("model.layers.2.", "model.layers.3."))}
    assert below <= changed and not (above & changed)
    assert "model.embed_tokens.weight" in changed  # the (tied) unembedding
    assert ("model.norm.weight" in changed) == final_norm  # the final norm learns only when pi_K goes through it
    assert [m["layer_policy_active"] for m in metrics] == [1.0, 1.0]
    assert not any("logprob_mismatch" in m for m in metrics)  # pi_K vs the full sampler: not a mismatch
    # step S + 1: the full policy again; every layer learns
    later = trainer.step(stream, 3)
    assert later["layer_policy_active"] == 0.0 and "logprob_mismatch" in later
    assert above <= _changed(mid, trainer.models.policy.state_dict())


def test_layer_k_logprobs_are_the_logit_lens_computed_by_hand():
    model, tokenizer = make_tiny_model(seed=1, num_layers=3)
    ids = torch.tensor([tokenizer.encode("(1+2)=3"), tokenizer.encode("a, b=cd!")[:7]])
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # a left-padded prompt
    t = 3
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        for layer in (1, 2):
            h = out.hidden_states[layer]  # the residual stream after decoder layer `layer`
            for final_norm in (False, True):
                z = model.lm_head(model.model.norm(h) if final_norm else h)[:, -t - 1 : -1].float() / 0.7
                want = torch.log_softmax(z, -1).gather(-1, ids[:, -t:, None]).squeeze(-1)
                got, _ = response_logprobs(model, ids, mask, t, temperature=0.7, layer=layer, final_norm=final_norm)
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        # the top layer is the model's own policy, with or without final_norm (BuPO's hidden_states[L] is normed)
        full, _ = response_logprobs(model, ids, mask, t, packed=False)
        for final_norm in (True, False):
            top, _ = response_logprobs(model, ids, mask, t, layer=3, final_norm=final_norm)
            torch.testing.assert_close(top, full, rtol=0, atol=1e-6)


def test_bupo_internal_layer_k_is_rlvr_layer_k_plus_1():
    """BuPO's code takes lm_head(hidden_states[k + 1]) for internal_layer = k: rlvr's layer k + 1, raw below the
    top and normed at the top (Hugging Face's last hidden state is after the final norm). Guards the mapping
    that the docs state, and the top layer's raw pi_L, which was not the policy (off by the final norm)."""
    model, tokenizer = make_tiny_model(seed=2, num_layers=3)
    ids = torch.tensor([tokenizer.encode("(1+2)=3")])
    mask = torch.ones_like(ids)
    t = 3
    with torch.no_grad():
        hidden_states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for k in range(3):  # BuPO's internal_layer
            z = model.lm_head(hidden_states[k + 1])[:, -t - 1 : -1].float()
            bupo = torch.log_softmax(z, -1).gather(-1, ids[:, -t:, None]).squeeze(-1)
            ours, _ = response_logprobs(model, ids, mask, t, layer=k + 1, final_norm=False)
            torch.testing.assert_close(ours, bupo, rtol=0, atol=1e-5)


def test_a_layer_beyond_the_models_depth_is_refused_before_training(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match=r"layer_policy.layer=5 is not a layer of LlamaForCausalLM, which has 2"):
        build(tiny_config(tiny_dir, tmp_path / "run", "algorithm.layer_policy.layer=5", "algorithm.layer_policy.steps=1"))
    assert not (tmp_path / "run").exists()


def test_a_run_with_a_layer_policy_warm_up_learns_the_tiny_task(tiny4, tmp_path):
    rewards = learning_curve(tiny4, tmp_path / "bupo", "grpo", "algorithm.layer_policy.layer=3",
                             "algorithm.layer_policy.steps=10")
    first, last = sum(rewards[:2]) / 2, sum(rewards[-10:]) / 10
    assert last > first + 0.08, f"reward {first:.3f} -> {last:.3f}; {[round(r, 2) for r in rewards]}"


@pytest.mark.parametrize("mode", ["none", "r2", "r3"])
def test_a_mixture_of_experts_model_trains_with_a_layer_policy(tiny_moe_dir, tmp_path, mode):
    """`rlvr train` of an MoE model with algorithm.layer_policy, with and without routing replay. Guards the
    routes of a forward that stops after layer K: they hold only the layers that ran (the others are left
    free), where the old code reshaped K layers' routes as all layers' and crashed at step 1
    ("shape '[16, 35, 2, 2]' is invalid for input of size 1120")."""
    import json

    from rlvr.cli import main

    run_dir = tmp_path / mode
    argv = ["train", f"model.name={tiny_moe_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
            "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4", "train.steps=3",
            "train.mini_batches=2", "eval.every=0", "checkpoint.every=0", "log_samples=0",
            "algorithm.layer_policy.layer=1", "algorithm.layer_policy.steps=2",
            f"algorithm.routing_replay={mode}", f"run_dir={run_dir}", "--no-progress"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["layer_policy_active"] for r in rows] == [1.0, 1.0, 0.0]
    for r in rows:
        assert r["routing_mismatch"] == r["routing_mismatch"]  # measured (not nan) in every step
    # in the layer phase only layer 0's router runs: no layer-1 figure; after it both layers are compared
    assert "routing_mismatch/layer_1" not in rows[0] and "routing_mismatch/layer_1" in rows[2]
    if mode != "none":
        assert rows[0]["routing_mismatch/layer_0"] == 0.0  # replayed exactly

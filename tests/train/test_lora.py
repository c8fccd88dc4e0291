"""LoRA through peft: only adapters train, the reference is the base, export merges."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from rlvr.config import PRESETS  # noqa: E402
from rlvr.models import load_model  # noqa: E402
from rlvr.models.logprobs import response_logprobs  # noqa: E402
from rlvr.train.build import build  # noqa: E402
from rlvr.train.data import PromptStream  # noqa: E402
from rlvr.train.runner import train  # noqa: E402
from tests.tiny_run import tiny_config  # noqa: E402

LORA = ["model.lora.rank=8", "model.lora.alpha=16"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_only_adapter_parameters_change(tiny_dir, tmp_path, preset):
    """With every preset (ppo's critic is its own full model: it is trained as usual, the policy only in its adapters)."""
    extra = ["algorithm.overlong.cache_len=2"] if preset == "dapo" else []
    trainer = build(tiny_config(tiny_dir, tmp_path, *LORA, "optim.lr=1e-2", "train.steps=2", "algorithm.kl.coef=0.05",
                                *extra, preset=preset))
    named = dict(trainer.models.policy.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in named.items()}
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    for step in (1, 2):
        trainer.step(stream, step)
    changed = {n for n, p in named.items() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)  # B starts at 0: the adapters really moved


def test_reference_is_the_base_model_with_adapters_off(tiny_dir, tmp_path):
    trainer = build(tiny_config(tiny_dir, tmp_path, *LORA, "optim.lr=1e-2", "algorithm.kl.coef=0.1"))
    assert trainer.models.reference is trainer.models.policy  # no second copy of the weights
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    trainer.step(stream, 1)
    m = trainer.step(stream, 2)
    assert m["kl"] > 0  # the adapters moved the policy away from the base
    base, _ = load_model(str(tiny_dir))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    from rlvr.models.lora import reference_mode

    with torch.no_grad(), reference_mode(trainer.models.lora):
        ref, _ = response_logprobs(trainer.models.policy, ids, torch.ones_like(ids), 3)
        want, _ = response_logprobs(base, ids, torch.ones_like(ids), 3)
        torch.testing.assert_close(ref, want, rtol=0, atol=1e-6)
    with torch.no_grad():
        now, _ = response_logprobs(trainer.models.policy, ids, torch.ones_like(ids), 3)
    assert not torch.allclose(now, want, atol=1e-4)


def test_lora_learns_the_tiny_task(tiny_dir, tmp_path):
    """The tiny random model's logits are near uniform and its head is tied to the embeddings, so
    adapters on the inner layers alone cannot sharpen them (measured: reward 0.01 -> 0.02 in 30 steps at
    any lr); with an adapter on lm_head too it learns like full fine-tuning (0.02 -> 0.21). A pretrained
    model needs no head adapter ("all-linear", the default, leaves the head out)."""
    torch.manual_seed(0)
    targets = "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]"
    cfg = tiny_config(tiny_dir, tmp_path, *LORA, targets, "train.steps=30", "optim.lr=2e-2", "task.kwargs.max_len=4")
    trainer = build(cfg)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    rewards = [trainer.step(stream, step)["reward_mean"] for step in range(1, 31)]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-10:]) / 10
    assert last > first + 0.08, f"reward {first:.3f} -> {last:.3f}: {[round(r, 2) for r in rewards]}"


def test_checkpoint_holds_the_adapter_resume_and_export(tiny_dir, tmp_path):
    from rlvr.commands.export import export
    from rlvr.models.lora import is_adapter_dir

    run_dir = tmp_path / "run"
    cfg = tiny_config(tiny_dir, run_dir, *LORA, "optim.lr=1e-2", "train.steps=2", "checkpoint.every=1")
    train(cfg, progress=False)
    ckpt = run_dir / "checkpoints" / "step_000002" / "model"
    assert is_adapter_dir(ckpt) and not (ckpt / "model.safetensors").exists()
    # resume from the adapter checkpoint
    from rlvr.config import load_recipe, resolve

    recipe = load_recipe(run_dir / "config.yaml")
    train(resolve(recipe, ["train.steps=3"]), resume=True, progress=False)
    # export merges the adapter: the plain model gives the trained adapter model's log-probs
    out = export(run_dir, tmp_path / "merged")
    merged, _ = load_model(str(out))
    trained = build(resolve(recipe), model_path=str(run_dir / "checkpoints" / "step_000003" / "model"))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        a, _ = response_logprobs(merged, ids, torch.ones_like(ids), 4)
        b, _ = response_logprobs(trained.models.policy, ids, torch.ones_like(ids), 4)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
    assert not any("lora" in n for n, _ in merged.named_parameters())



def test_merged_weights_stream_what_the_merged_model_holds(tiny_dir, tmp_path):
    """What an engine with its own copy (vllm) receives at each push of a LoRA policy: the merged model's state
    dict under the plain names, computed without touching the trained model."""
    from rlvr.models.lora import has_lora, merged_model, merged_weights

    trainer = build(tiny_config(tiny_dir, tmp_path, *LORA, "optim.lr=1e-2"))
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    trainer.step(stream, 1)  # B moves off 0: the deltas are not zero
    before = {n: p.detach().clone() for n, p in trainer.models.lora.named_parameters()}
    got = dict(merged_weights(trainer.models.lora))
    want = merged_model(trainer.models.lora).state_dict()
    assert set(got) == set(want) and "lm_head.weight" in got
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
    base = dict(trainer.models.lora.get_base_model().named_parameters())
    adapted = [n for n in got if n.replace(".weight", ".base_layer.weight") in base]
    assert adapted and all(not torch.equal(got[n], base[n.replace(".weight", ".base_layer.weight")]) for n in adapted)
    assert all(torch.equal(p, before[n]) for n, p in trainer.models.lora.named_parameters())  # untouched
    assert has_lora(trainer.models.policy) and not has_lora(merged_model(trainer.models.lora))

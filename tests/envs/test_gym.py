"""CartPole learns with every estimator, on the same core as the LLM trainer (a few seconds each)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gymnasium")

from rlvr.envs.gym import MLPPolicy, collect, make_env, train_gym  # noqa: E402


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
    options = {"lam": 0.95} if estimator == "gae" else None
    curve = train_gym("CartPole-v1", estimator=estimator, iterations=20, starts=4, group_size=8, lr=1e-2,
                      options=options)
    first, last = sum(curve[:2]) / 2, sum(curve[-5:]) / 5
    assert last > first + 50, f"{estimator}: {first:.0f} -> {last:.0f}: {[round(c) for c in curve]}"


def test_acrobot_learns():
    """Measured (seed 0): mean return -500 (never swings up) -> about -230 within 15 iterations, 4 s."""
    curve = train_gym("Acrobot-v1", estimator="grpo", iterations=15, starts=4, group_size=4, lr=1e-2)
    assert curve[0] < -450 and sum(curve[-5:]) / 5 > -350, [round(c) for c in curve]


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_toy_text_frozen_lake_learns(estimator):
    """A discrete observation space (one-hot), a sparse reward: 0.03 -> 1.0 success within 10 iterations."""
    curve = train_gym("FrozenLake-v1", estimator=estimator, iterations=15, starts=4, group_size=8, lr=3e-2,
                      max_steps=100, env_kwargs={"is_slippery": False})
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

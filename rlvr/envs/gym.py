"""Classic RL environments (gymnasium, the `gym` extra) on the same core as the LLM trainer.

An episode is laid out like a response: step t of episode i is "token" t, so a batch of N episodes is
[N, T] tensors (observations [N, T, D], actions, log-probs, per-step rewards) with a `loss_mask` True
on the steps the episode really took. Groups are G episodes from the same start state
(`env.reset(seed=s)`), so the group estimators compare episodes exactly as they compare an LLM's
samples of one prompt. The advantages come from `rlvr.core.compute_advantages` (per-step rewards as
`token_rewards`: each step is credited with its reward-to-go), the loss from `rlvr.core.rl_objective`:

- `reinforce` (no baseline), `grpo` and `rloo` (the group of episodes from one start), `remax` (the
  greedy episode from the same start as the baseline), `gae` (a value network; PPO).

The policy is a small MLP over the observation (one-hot for the discrete observations of the toy-text
environments, e.g. FrozenLake); actions are sampled from its softmax with a seeded
torch generator (one stream per collection), so a seed reproduces a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlvr.core.advantages import compute_advantages
from rlvr.core.objective import rl_objective


def make_env(env_id: str, **kwargs):
    try:
        import gymnasium
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("classic RL environments need gymnasium: pip install 'rlvr[gym]'") from err
    return gymnasium.make(env_id, **kwargs)


def observation_dim(space) -> int:
    """Input size of the policy: a Box's flat size, or n for a Discrete space (one-hot, toy-text envs)."""
    if getattr(space, "shape", None) in ((), None):
        return int(space.n)
    return int(torch.tensor(space.shape).prod())


def observation_vector(obs, space) -> Tensor:
    """The observation as a float vector (one-hot for a Discrete space)."""
    if getattr(space, "shape", None) in ((), None):
        v = torch.zeros(int(space.n))
        v[int(obs)] = 1.0
        return v
    return torch.as_tensor(obs, dtype=torch.float32).reshape(-1)


class MLPPolicy(nn.Module):
    """Discrete-action policy: logits = MLP(observation)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)


class ValueNet(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)


@dataclass
class Episodes:
    obs: Tensor  # [N, T, D]
    actions: Tensor  # [N, T]
    logprobs: Tensor  # [N, T], of the sampled actions
    rewards: Tensor  # [N, T] per-step rewards
    loss_mask: Tensor  # [N, T] bool
    group_ids: Tensor  # [N]

    @property
    def returns(self) -> Tensor:
        return torch.where(self.loss_mask, self.rewards, torch.zeros_like(self.rewards)).sum(-1)


@torch.no_grad()
def collect(env_id: str, policy: MLPPolicy, starts: list[int], group_size: int, max_steps: int,
            generator: torch.Generator, greedy: bool = False, env_kwargs: dict | None = None) -> Episodes:
    """group_size episodes from each start seed (episode-major: start k's episodes are rows k*G..k*G+G-1),
    all stepped in lockstep so the policy runs batched."""
    envs, obs0 = [], []
    for s in starts:
        for _ in range(group_size):
            env = make_env(env_id, **(env_kwargs or {}))
            o, _ = env.reset(seed=int(s))
            envs.append(env)
            obs0.append(observation_vector(o, env.observation_space))
    n = len(envs)
    obs_dim = obs0[0].numel()
    obs = torch.zeros(n, max_steps, obs_dim)
    actions = torch.zeros(n, max_steps, dtype=torch.long)
    logprobs = torch.zeros(n, max_steps)
    rewards = torch.zeros(n, max_steps)
    mask = torch.zeros(n, max_steps, dtype=torch.bool)
    current = torch.stack(obs0)
    alive = torch.ones(n, dtype=torch.bool)
    for t in range(max_steps):
        idx = alive.nonzero().flatten()
        if idx.numel() == 0:
            break
        logits = policy(current[idx])
        logp_all = torch.log_softmax(logits, -1)
        if greedy:
            act = logits.argmax(-1)
        else:
            act = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
        for j, i in enumerate(idx.tolist()):
            obs[i, t] = current[i]
            actions[i, t] = act[j]
            logprobs[i, t] = logp_all[j, act[j]]
            mask[i, t] = True
            o, r, terminated, truncated, _ = envs[i].step(int(act[j]))
            rewards[i, t] = float(r)
            current[i] = observation_vector(o, envs[i].observation_space)
            if terminated or truncated:
                alive[i] = False
    for env in envs:
        env.close()
    group_ids = torch.arange(len(starts)).repeat_interleave(group_size)
    return Episodes(obs, actions, logprobs, rewards, mask, group_ids)


def train_gym(env_id: str = "CartPole-v1", *, estimator: str = "grpo", iterations: int = 30, starts: int = 8,
              group_size: int = 8, lr: float = 1e-2, max_steps: int = 500, seed: int = 0,
              options: dict | None = None, value_lr: float = 1e-2, env_kwargs: dict | None = None, log=None,
              on_iteration=None) -> list[float]:
    """Train an MLP policy with `estimator`'s advantages and the pg loss; returns the mean episode
    return of each iteration's sampled episodes (before that iteration's update). `options` are the
    estimator's own (e.g. gae's gamma, lam). `on_iteration(it, metrics)` receives each iteration's
    metrics (reward_mean/std, episode length, entropy, loss)."""
    import time
    torch.manual_seed(seed)
    probe = make_env(env_id, **(env_kwargs or {}))
    obs_dim, n_actions = observation_dim(probe.observation_space), probe.action_space.n
    probe.close()
    policy = MLPPolicy(obs_dim, n_actions)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    critic = ValueNet(obs_dim) if estimator == "gae" else None
    critic_opt = torch.optim.Adam(critic.parameters(), lr=value_lr) if critic is not None else None
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for it in range(iterations):
        t0 = time.perf_counter()
        start_seeds = [seed * 100_003 + it * starts + k for k in range(starts)]
        ep = collect(env_id, policy, start_seeds, group_size, max_steps, gen, env_kwargs=env_kwargs)
        curve.append(float(ep.returns.mean()))
        baseline = values = None
        if estimator == "remax":
            greedy = collect(env_id, policy, start_seeds, 1, max_steps, gen, greedy=True, env_kwargs=env_kwargs)
            baseline = greedy.returns.repeat_interleave(group_size)
        if critic is not None:
            with torch.no_grad():
                values = torch.where(ep.loss_mask, critic(ep.obs), torch.zeros(()))
        adv, returns = compute_advantages(
            estimator, rewards=ep.returns, loss_mask=ep.loss_mask, group_ids=ep.group_ids, values=values,
            baseline_rewards=baseline, token_rewards=ep.rewards, **(options or {}),
        )
        logp = torch.log_softmax(policy(ep.obs), -1).gather(-1, ep.actions[..., None]).squeeze(-1)
        loss, _ = rl_objective(logp, loss_mask=ep.loss_mask, advantages=adv, loss="pg",
                               aggregation="seq_mean_token_sum_norm", constant=max_steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if critic is not None:
            v = critic(ep.obs)
            vl = torch.where(ep.loss_mask, (v - returns) ** 2, torch.zeros(())).sum() / ep.loss_mask.sum()
            critic_opt.zero_grad()
            vl.backward()
            critic_opt.step()
        if log is not None:
            log(f"iteration {it + 1}: mean return {curve[-1]:.1f}")
        if on_iteration is not None:
            lengths = ep.loss_mask.sum(-1).float()
            with torch.no_grad():
                p = torch.softmax(policy(ep.obs), -1)
                ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
            on_iteration(it + 1, {
                "reward_mean": curve[-1], "reward_std": float(ep.returns.std()),
                "response_len_mean": float(lengths.mean()), "response_len_max": float(lengths.max()),
                "entropy": float(ent[ep.loss_mask].mean()), "loss": float(loss.detach()),
                "step_time_s": time.perf_counter() - t0,
            })
    return curve

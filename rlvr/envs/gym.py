"""Classic RL environments (gymnasium, the `gym` extra) on the same core as the LLM trainer.

An episode is laid out like a response: step t of episode i is "token" t, so a batch of N episodes is
[N, T] tensors (observations [N, T, D], actions, log-probs, per-step rewards) with a `loss_mask` True
on the steps the episode really took. Groups are G episodes from the same start state
(`env.reset(seed=s)`), so the group estimators compare episodes exactly as they compare an LLM's
samples of one prompt. The advantages come from `rlvr.core.compute_advantages` (per-step rewards as
`token_rewards`: each step is credited with its reward-to-go), the loss from `rlvr.core.rl_objective`
with the recipe's policy loss, aggregation and update schedule (`GymAlgorithm`, which `rlvr train`
builds from the recipe):

- `reinforce` (no baseline), `grpo` and `rloo` (the group of episodes from one start), `remax` (the
  greedy episode from the same start as the baseline), `gae` (a value network; PPO).
- `gym_gradient_variance`: the policy-gradient variance of each estimator on a fixed policy and fixed
  start states (the measurement of rlvr.compare.grad_variance), `gae` with a value network fitted to
  that policy.

The policy is a small MLP over the observation (one-hot for the discrete observations of the toy-text
environments, e.g. FrozenLake); actions are sampled from its softmax with a seeded
torch generator (one stream per collection), so a seed reproduces a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS, compute_advantages
from rlvr.core.losses import POLICY_LOSSES, covariance_selection
from rlvr.core.objective import rl_objective, value_objective


def _needs(estimator: str, what: str) -> bool:
    """Whether the advantage estimator declared `what` among its inputs at registration (rlvr.core.registry)."""
    return what in ADVANTAGE_ESTIMATORS.needs(estimator)


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


@dataclass
class GymAlgorithm:
    """What the LLM trainer's `algorithm` and `train` sections say, for an MLP policy (rlvr train maps a
    recipe onto it): the estimator and its options, the policy loss and its options, the aggregation and the
    update schedule (epochs x mini-batches of whole groups over each iteration's episodes, old log-probs
    those of the sampling policy), the entropy bonus, and the value network's learning rate and clip."""

    estimator: str = "grpo"
    options: dict[str, Any] = field(default_factory=dict)
    loss: str = "pg"
    loss_params: dict[str, Any] = field(default_factory=dict)
    aggregation: str = "seq_mean_token_sum_norm"
    constant: float | None = None
    """seq_mean_token_sum_norm's constant; None: the episode step limit."""
    epochs: int = 1
    mini_batches: int = 1
    entropy_coef: float = 0.0
    value_lr: float = 1e-2
    value_clip: float | None = None
    """PPO's clip of the value update around the old values; None (the default): unclipped. Returns of
    classic environments are in the hundreds, and a clip of 0.2 would let the value move 0.2 per update."""


@dataclass
class GymResult:
    curve: list[float]  # mean episode return of each iteration's sampled episodes, before its update
    policy: MLPPolicy
    critic: ValueNet | None


def new_policy(env_id: str, env_kwargs: dict | None = None) -> MLPPolicy:
    probe = make_env(env_id, **(env_kwargs or {}))
    policy = MLPPolicy(observation_dim(probe.observation_space), probe.action_space.n)
    probe.close()
    return policy


def start_seeds(seed: int, iteration: int, starts: int) -> list[int]:
    """The start states of one iteration: distinct across iterations and seeds."""
    return [seed * 100_003 + iteration * starts + k for k in range(starts)]


def episode_advantages(algo: GymAlgorithm, ep: Episodes, *, critic: ValueNet | None = None,
                       greedy_returns: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`algo.estimator`'s advantages and returns [N, T] for a batch of episodes (rlvr.core.compute_advantages);
    `greedy_returns` [N]: remax's baseline, the greedy episode's return from each row's start."""
    values = None
    if critic is not None:
        with torch.no_grad():
            values = torch.where(ep.loss_mask, critic(ep.obs), torch.zeros(()))
    return compute_advantages(
        algo.estimator, rewards=ep.returns, loss_mask=ep.loss_mask, group_ids=ep.group_ids, values=values,
        baseline_rewards=greedy_returns, token_rewards=ep.rewards, **algo.options,
    )


def policy_objective(algo: GymAlgorithm, policy: MLPPolicy, ep: Episodes, adv: Tensor, rows: list[int] | slice,
                     max_steps: int, cov_seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    """The policy's loss on the episodes `rows` (one mini-batch; its own denominators) by rl_objective."""
    obs, actions, mask, a = ep.obs[rows], ep.actions[rows], ep.loss_mask[rows], adv[rows]
    old = ep.logprobs[rows]
    logits = policy(obs)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, actions[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    params = dict(algo.loss_params)
    if "covariance_selection" in POLICY_LOSSES.needs(algo.loss):  # Clip-Cov / KL-Cov: over the whole mini-batch
        params["selected"] = covariance_selection(
            algo.loss, logprobs=logp.detach(), old_logprobs=old, advantages=a, loss_mask=mask,
            generator=torch.Generator().manual_seed(cov_seed), **params)
    return rl_objective(logp, loss_mask=mask, advantages=a, old_logprobs=old, loss=algo.loss, loss_params=params,
                        aggregation=algo.aggregation, num_tokens=mask.sum(), num_sequences=mask.any(-1).sum(),
                        constant=algo.constant or max_steps, entropy=entropy, entropy_coef=algo.entropy_coef)


def train_gym(env_id: str = "CartPole-v1", algo: GymAlgorithm | None = None, *, iterations: int = 30,
              starts: int = 8, group_size: int = 8, lr: float = 1e-2, max_steps: int = 500, seed: int = 0,
              env_kwargs: dict | None = None, log=None, on_iteration=None) -> GymResult:
    """Train an MLP policy with `algo` (default: GRPO's advantages, the pg loss, one update per iteration).

    Each iteration samples `group_size` episodes from each of `starts` start states, computes the advantages
    once, then makes algo.epochs x algo.mini_batches optimizer steps (a fresh partition of whole groups each
    epoch), the value network (gae) stepping on the same mini-batches. `on_iteration(it, metrics)` receives
    each iteration's metrics (reward_mean/std, episode length, entropy, loss, clip fractions, value loss)."""
    import time

    from rlvr.train.batch import minibatch_rows
    from rlvr.train.seeds import COVARIANCE, MINIBATCH, derive_seed

    algo = algo or GymAlgorithm()
    torch.manual_seed(seed)
    policy = new_policy(env_id, env_kwargs)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    critic = ValueNet(policy.net[0].in_features) if _needs(algo.estimator, "values") else None
    critic_opt = torch.optim.Adam(critic.parameters(), lr=algo.value_lr) if critic is not None else None
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for it in range(iterations):
        t0 = time.perf_counter()
        seeds = start_seeds(seed, it, starts)
        ep = collect(env_id, policy, seeds, group_size, max_steps, gen, env_kwargs=env_kwargs)
        curve.append(float(ep.returns.mean()))
        greedy = None
        if _needs(algo.estimator, "baseline_rewards"):  # ReMax: the greedy episode from the same start
            greedy = collect(env_id, policy, seeds, 1, max_steps, gen, greedy=True, env_kwargs=env_kwargs)
            greedy = greedy.returns.repeat_interleave(group_size)
        adv, returns = episode_advantages(algo, ep, critic=critic, greedy_returns=greedy)
        old_values = critic(ep.obs).detach() if critic is not None else None
        sums: dict[str, float] = {}
        updates = 0
        for epoch in range(algo.epochs):
            partition = minibatch_rows(ep.group_ids.tolist(), algo.mini_batches, derive_seed(seed, MINIBATCH, it, epoch))
            for index, rows in enumerate(partition):
                loss, m = policy_objective(algo, policy, ep, adv, rows, max_steps,
                                           derive_seed(seed, COVARIANCE, it, epoch, index))
                opt.zero_grad()
                loss.backward()
                opt.step()
                if critic is not None:
                    vloss, vm = value_objective(critic(ep.obs[rows]), old_values[rows], returns[rows],
                                                ep.loss_mask[rows], value_clip=algo.value_clip)
                    critic_opt.zero_grad()
                    vloss.backward()
                    critic_opt.step()
                    m.update(vm)
                m.pop("num_valid_tokens", None)
                m["loss"] = loss.detach()
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                updates += 1
        if log is not None:
            log(f"iteration {it + 1}: mean return {curve[-1]:.1f}")
        if on_iteration is not None:
            lengths = ep.loss_mask.sum(-1).float()
            with torch.no_grad():
                p = torch.softmax(policy(ep.obs), -1)
                ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
            metrics = {k: v / updates for k, v in sums.items()}
            metrics.update({
                "reward_mean": curve[-1], "reward_std": float(ep.returns.std()),
                "response_len_mean": float(lengths.mean()), "response_len_max": float(lengths.max()),
                "entropy": float(ent[ep.loss_mask].mean()), "optimizer_steps": float(updates),
                "step_time_s": time.perf_counter() - t0,
            })
            on_iteration(it + 1, metrics)
    return GymResult(curve, policy, critic)


def fit_value(env_id: str, policy: MLPPolicy, starts: list[int], group_size: int, max_steps: int, *, seed: int,
              gamma: float = 1.0, batches: int = 8, steps: int = 300, lr: float = 1e-2,
              env_kwargs: dict | None = None) -> ValueNet:
    """A value network fitted to a fixed policy: regression of V(s_t) on the Monte-Carlo return-to-go of
    `batches` fresh episode batches from `starts` (the learned-critic baseline at its best for this policy)."""
    gen = torch.Generator().manual_seed(seed)
    eps = [collect(env_id, policy, starts, group_size, max_steps, gen, env_kwargs=env_kwargs) for _ in range(batches)]
    obs = torch.cat([e.obs[e.loss_mask] for e in eps])
    targets = []
    for e in eps:
        togo = torch.zeros_like(e.rewards)
        running = torch.zeros(e.rewards.shape[0])
        for t in reversed(range(e.rewards.shape[1])):
            running = torch.where(e.loss_mask[:, t], e.rewards[:, t] + gamma * running, running)
            togo[:, t] = running
        targets.append(togo[e.loss_mask])
    target = torch.cat(targets)
    torch.manual_seed(seed)
    critic = ValueNet(obs.shape[-1])
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        loss = (critic(obs) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return critic


def gym_gradient_variance(env_id: str, policy: MLPPolicy, estimators: dict[str, dict[str, Any]], *, starts: int,
                          group_size: int, max_steps: int, batches: int = 8, seed: int = 0,
                          aggregation: str = "seq_mean_token_sum_norm", critic: ValueNet | None = None,
                          env_kwargs: dict | None = None) -> dict[str, dict[str, Any]]:
    """rlvr.compare.grad_variance's measurement for a classic environment: the same policy, the same `starts`
    start states, `batches` independent episode batches, each estimator's advantages with the `pg` loss and
    one aggregation, the trace of the covariance of the policy gradient and the cosines to its mean.
    `gae` uses `critic`, or (None) a value network fitted to this policy on separate episodes (fit_value)."""
    from rlvr.eval.variance import variance_statistics
    from rlvr.train.seeds import GRAD_VARIANCE, derive_seed

    seeds = start_seeds(seed, 1_000_000, starts)  # start states no training iteration used
    valued = [e for e in estimators if _needs(e, "values")]
    if valued and critic is None:
        critic = fit_value(env_id, policy, seeds, group_size, max_steps, seed=derive_seed(seed, GRAD_VARIANCE, batches),
                           gamma=float(estimators[valued[0]].get("gamma", 1.0)), env_kwargs=env_kwargs)
    episodes = []
    for b in range(batches):
        gen = torch.Generator().manual_seed(derive_seed(seed, GRAD_VARIANCE, b))
        episodes.append(collect(env_id, policy, seeds, group_size, max_steps, gen, env_kwargs=env_kwargs))
    greedy = None
    if any(_needs(e, "baseline_rewards") for e in estimators):  # greedy episodes are deterministic: one serves all
        greedy = collect(env_id, policy, seeds, 1, max_steps, torch.Generator(), greedy=True, env_kwargs=env_kwargs)
        greedy = greedy.returns.repeat_interleave(group_size)
    params = list(policy.parameters())

    def gradient(b: int, e: str) -> Tensor:
        algo = GymAlgorithm(e, dict(estimators[e]), aggregation=aggregation)
        ep = episodes[b]
        adv, _ = episode_advantages(algo, ep, critic=critic if _needs(e, "values") else None,
                                    greedy_returns=greedy if _needs(e, "baseline_rewards") else None)
        loss, _ = policy_objective(algo, policy, ep, adv, slice(None), max_steps)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    return variance_statistics(list(estimators), batches, gradient)

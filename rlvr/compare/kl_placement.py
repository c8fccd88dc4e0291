"""Which KL does each placement's gradient follow? Measured exactly on a model small enough to enumerate.

For a prompt x and responses of a fixed length T over a vocabulary of V tokens, every response y in V^T
can be listed, so the sequence-level divergences and their gradients are exact:

    reverse  KL(pi || pi_ref) = sum_y pi(y) [log pi(y) - log pi_ref(y)]
    forward  KL(pi_ref || pi) = sum_y pi_ref(y) [log pi_ref(y) - log pi(y)]

Each placement turns samples y ~ pi into a loss whose gradient is its estimate (rlvr.core.kl):

    k1 in the reward   A_t = -sum_{s >= t} k1_s (detached, the reward-to-go of the trainer), loss -sum_t A_t log pi_t
    k2 / k3 in the loss   loss = sum_t k(log pi_t, log pi_ref_t), differentiated through log pi_t

(token sums: with a fixed length the trainer's per-token mean differs by the constant 1/T only). Their
*expected* gradient E_pi[grad loss(y)] is also computed exactly, as sum_y pi(y) grad loss(y), so the bias
is measured without sampling noise: the cosine of each expected gradient to the true reverse- and
forward-KL gradients and the ratio of norms. Then the estimators as the trainer uses them: R batches of n
samples, the trace of the covariance of the batch gradient (rlvr.compare.grad_variance's statistics) and
the mean cosine of a batch's gradient to the true reverse-KL gradient.

The theory this checks (rlvr/core/kl.py's table): k1 in the reward follows the reverse KL exactly; k3 in
the loss (GRPO) follows the forward KL per token; k2 in the loss follows the reverse KL per token, which
for sequences drops the KL of the tokens after t from token t's credit, so it is not the sequence-level
reverse-KL gradient either.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from rlvr.compare.report import mean_interval
from rlvr.core.advantages import compute_advantages
from rlvr.core.kl import kl_divergence

PLACEMENTS = (("k1", "reward"), ("k2", "loss"), ("k3", "loss"))


def all_responses(vocab: list[int], length: int) -> Tensor:
    """Every response of `length` tokens drawn from `vocab`, [V^T, T] (long)."""
    return torch.tensor(list(itertools.product(vocab, repeat=length)), dtype=torch.long)


def token_logprobs(model, prompt: list[int], responses: Tensor, vocab: list[int]) -> tuple[Tensor, Tensor]:
    """log pi(y_t | x, y_<t) [M, T] under `model`'s distribution restricted to `vocab` (renormalised over it,
    so that the listed responses are the whole support), and the whole conditional log-distribution at each
    position [M, T, V]."""
    m, t = responses.shape
    ids = torch.cat([torch.tensor(prompt, dtype=torch.long).expand(m, -1), responses], dim=1)
    logits = model(input_ids=ids).logits[:, len(prompt) - 1 : -1]  # [M, T, V_model]: predicts each response token
    dist = torch.log_softmax(logits[..., vocab].float(), -1)  # [M, T, V]
    index = torch.tensor([vocab.index(v) for v in responses.reshape(-1).tolist()]).reshape(m, t)
    return dist.gather(-1, index[..., None]).squeeze(-1), dist


def placement_loss(estimator: str, placement: str, logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per response [M]: the loss whose gradient is the placement's KL-gradient estimate (module docstring)."""
    mask = torch.ones_like(logp, dtype=torch.bool)
    if placement == "reward":
        kl = kl_divergence(logp.detach(), ref_logp, estimator, loss_mask=mask)
        adv, _ = compute_advantages("reinforce", rewards=torch.zeros(logp.shape[0]), loss_mask=mask,
                                    token_rewards=-kl)
        return -(adv * logp).sum(-1)
    return kl_divergence(logp, ref_logp, estimator, loss_mask=mask).sum(-1)


def _flat(grads, params) -> Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, params)])


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def _rel_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b||: how far an expected gradient is from a true one, direction and size together."""
    return float((a - b).norm() / b.norm())


def kl_gradient_agreement(policy, reference, prompt: list[int], vocab: list[int], length: int, *,
                          placements=PLACEMENTS, batches: int = 16, samples: int = 16,
                          seed: int = 0) -> dict[str, Any]:
    """The exact reverse and forward sequence KL, and per placement: the cosine of its exact expected gradient
    to the true reverse- and forward-KL gradients, the norm ratio to the reverse one, and, over `batches`
    batches of `samples` responses sampled from pi, the trace of the covariance of the batch gradient and the
    mean cosine of a batch gradient to the true reverse-KL gradient (with 95% intervals)."""
    from rlvr.eval.variance import variance_statistics

    params = [p for p in policy.parameters() if p.requires_grad]
    responses = all_responses(vocab, length)
    with torch.no_grad():
        ref_logp, ref_dist = token_logprobs(reference, prompt, responses, vocab)
    logp, dist = token_logprobs(policy, prompt, responses, vocab)
    seq, ref_seq = logp.sum(-1), ref_logp.sum(-1)
    pi, pi_ref = seq.exp(), ref_seq.exp()
    if not math.isclose(float(pi.detach().sum()), 1.0, abs_tol=1e-4):
        raise RuntimeError(f"the listed responses hold probability {float(pi.detach().sum()):.6f}, not 1")
    reverse = (pi * (seq - ref_seq)).sum()
    forward = (pi_ref * (ref_seq - seq)).sum()
    # the per-token divergences of the states pi visits, the state distribution held fixed (what a loss
    # term differentiates): sum_y pi(y) sum_t KL(pi(.|s_t) || pi_ref(.|s_t)), and the forward one
    token_reverse = (pi.detach()[:, None] * (dist.exp() * (dist - ref_dist)).sum(-1)).sum()
    token_forward = (pi.detach()[:, None] * (ref_dist.exp() * (ref_dist - dist)).sum(-1)).sum()
    g_reverse, g_forward, g_token_reverse, g_token_forward = (
        _flat(torch.autograd.grad(x, params, retain_graph=True), params)
        for x in (reverse, forward, token_reverse, token_forward))
    gen = torch.Generator().manual_seed(seed)
    draws = [torch.multinomial(pi.detach(), samples, replacement=True, generator=gen) for _ in range(batches)]
    out: dict[str, Any] = {
        "responses": responses.shape[0], "length": length, "vocab": len(vocab),
        "kl_reverse": float(reverse.detach()), "kl_forward": float(forward.detach()), "placements": {},
    }
    for estimator, placement in placements:
        per_response = placement_loss(estimator, placement, logp, ref_logp)  # [M]
        expected = _flat(torch.autograd.grad((pi.detach() * per_response).sum(), params, retain_graph=True), params)

        def gradient(b: int, _name: str, per_response=per_response) -> Tensor:
            loss = per_response[draws[b]].mean()
            return _flat(torch.autograd.grad(loss, params, retain_graph=True), params)

        stats = variance_statistics(["x"], batches, gradient)["x"]
        cosines = [_cos(gradient(b, "x"), g_reverse) for b in range(batches)]
        out["placements"][f"{estimator} in the {placement}"] = {
            "cos_expected_to_reverse": _cos(expected, g_reverse),
            "cos_expected_to_forward": _cos(expected, g_forward),
            "cos_expected_to_token_reverse": _cos(expected, g_token_reverse),
            "cos_expected_to_token_forward": _cos(expected, g_token_forward),
            "norm_ratio_to_reverse": float(expected.norm() / g_reverse.norm()),
            "rel_error_to_reverse": _rel_error(expected, g_reverse),
            "rel_error_to_forward": _rel_error(expected, g_forward),
            "rel_error_to_token_reverse": _rel_error(expected, g_token_reverse),
            "rel_error_to_token_forward": _rel_error(expected, g_token_forward),
            "batch_cos_to_reverse": mean_interval(cosines),
            "trace_cov": stats["trace_cov"],
            "relative_variance_to_reverse": stats["trace_cov"]["mean"] / float(g_reverse.pow(2).sum()),
        }
    return out


def perturbed_copy(model, scale: float, seed: int):
    """A copy of `model` with Gaussian noise of std `scale` x each parameter's own std added to every weight:
    a policy at a controlled distance from its reference."""
    import copy

    gen = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            std = float(p.std()) if p.numel() > 1 else 1.0
            p.add_(torch.randn(p.shape, generator=gen) * scale * std)
    return other


def main(argv: list[str] | None = None) -> int:
    """python -m rlvr.compare.kl_placement [--out FILE]: the measurement on a tiny random Llama (3-character
    vocabulary, 4-token responses: 81 responses), at three distances between policy and reference."""
    import argparse
    import json

    from rlvr.models.tiny import make_tiny_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--length", type=int, default=4)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args(argv)
    reference, tokenizer = make_tiny_model(seed=0, chars="abc")
    reference.eval()
    vocab = tokenizer.convert_tokens_to_ids(["a", "b", "c"])
    prompt = tokenizer.convert_tokens_to_ids(["<|im_start|>", "a", "b"])
    results = []
    for scale in (1.0, 3.0, 10.0):
        policy = perturbed_copy(reference, scale, seed=1)
        r = kl_gradient_agreement(policy, reference, prompt, vocab, args.length, batches=args.batches,
                                  samples=args.samples)
        r["perturbation"] = scale
        results.append(r)
        print(f"perturbation {scale}: KL(pi||ref) = {r['kl_reverse']:.4f}, KL(ref||pi) = {r['kl_forward']:.4f}")
        print("  placement         cosine of E[g] to the gradient of: seq rev / seq fwd / token rev / token fwd KL"
              "   |E g|/|grad rev|   batch cos to rev   tr Cov/|grad rev|^2")
        for name, p in r["placements"].items():
            print(f"  {name:16s}  {p['cos_expected_to_reverse']:+.4f} {p['cos_expected_to_forward']:+.4f} "
                  f"{p['cos_expected_to_token_reverse']:+.4f} {p['cos_expected_to_token_forward']:+.4f}"
                  f"   {p['norm_ratio_to_reverse']:.3f}   {p['batch_cos_to_reverse']['mean']:+.3f}"
                  f"   {p['relative_variance_to_reverse']:.3f}")
        print("  placement         ||E[g] - grad|| / ||grad|| of: seq rev / seq fwd / token rev / token fwd KL")
        for name, p in r["placements"].items():
            print(f"  {name:16s}  {p['rel_error_to_reverse']:.2e} {p['rel_error_to_forward']:.2e} "
                  f"{p['rel_error_to_token_reverse']:.2e} {p['rel_error_to_token_forward']:.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The weight push of the engine contract (docs/design.md, "The engine contract"): after every update the trainer
pushes its weights, with the policy version, to the rollout engine and checks the push on a fixed probe."""

from __future__ import annotations

import torch

from rlvr.models.logprobs import response_logprobs


class WeightSync:
    """Pushes the policy's weights to the engine and checks them: the engine's own check of its copy where it
    has one (`weight_sync_error`), and the log-probs of a few fixed tokens, which the engine and the trainer
    must agree on to `rollout.sync_tolerance`."""

    def __init__(self, cfg, models, topo, *, sharded=()):
        self.cfg = cfg
        self.models = models
        """The trainer's models (rlvr.train.prepare.Models): the policy, its LoRA model and the engine."""
        self.topo = topo
        self.sharded = list(sharded)
        self.probe = probe_tokens(models.tokenizer, models.policy.config.vocab_size)
        self.max_diff = 0.0
        """The probe's largest |engine - trainer| log-prob after the last push (logged as weight_sync_max_diff)."""

    @property
    def model(self):
        return self.models.policy

    @property
    def engine(self):
        return self.models.engine

    @property
    def lora(self):
        return self.models.lora

    @property
    def lower_precision_engine(self) -> bool:
        """The engine samples from its own copy of the weights in a lower precision (rollout.dtype)."""
        declared = getattr(self.engine, "lower_precision", None)  # an engine in a worker process says so
        if declared is not None:
            return bool(declared)
        own = getattr(self.engine, "model", None)
        return own is not None and own is not self.model and own.dtype != next(self.model.parameters()).dtype

    def push(self, version: int) -> None:
        """engine.update_weights(model, version), then the checks. An engine with its own copy of an FSDP-sharded
        policy gets the full weights streamed, gathered bucket by bucket."""
        source = self.model
        if self.model in self.sharded and getattr(self.engine, "model", None) is not self.model and self.lora is None:
            source = self.topo.full_weights(self.model)  # (a LoRA policy: the engine merges the gathered weights)
        # A LoRA policy's merge reads the base weights whole: gathered for it under per-layer FSDP.
        merging = [self.model] if self.lora is not None and self.model in self.sharded else []
        with self.topo.full_params(merging):
            self.engine.update_weights(source, version)
        self.verify(version, self.model)

    def verify(self, version: int, reference, trainer_probe=None) -> float:
        """Check the engine after a push of policy version `version`: its own check of its copy against
        `reference` (the model or state dict pushed), and its probe log-probs against `trainer_probe` (the
        trainer's under those weights; None: under its current ones); the probe's largest difference."""
        self.max_diff = self.probe_diff(trainer_probe)
        check = getattr(self.engine, "weight_sync_error", None)
        error = check(reference) if check is not None else None
        if error is not None and error > 0:
            raise RuntimeError(
                f"weight sync failed at policy version {version}: the engine's copy of the weights differs "
                f"from the trainer's (cast to its dtype) by up to {error:.3g}; check the engine's update_weights "
                f"({type(self.engine).__name__})")
        if self.lower_precision_engine and error is not None and self.cfg.rollout.sync_tolerance is None:
            # A lower-precision copy checked exactly above: the probe's gap is precision (it grows as the policy
            # sharpens, bfloat16 logits of unlikely tokens), logged as weight_sync_max_diff, not a sync failure.
            return self.max_diff
        tol = self.cfg.rollout.sync_tolerance or 1e-3
        if not self.max_diff <= tol:
            raise RuntimeError(
                f"weight sync failed at policy version {version}: the rollout engine's log-probs of a fixed "
                f"probe differ from the trainer's by up to {self.max_diff:.3g} nats (rollout.sync_tolerance = {tol:g}), "
                "so it would sample from stale or corrupted weights. Check the engine's update_weights "
                f"({type(self.engine).__name__}); raise rollout.sync_tolerance only if the engine runs at a lower precision"
            )
        return self.max_diff

    def trainer_probe(self):
        """The trainer's log-probs of the probe under its current weights [T]."""
        prompt, response = self.probe
        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt + response], device=device)
        with torch.no_grad():
            trainer_lp, _ = response_logprobs(self.model, ids, torch.ones_like(ids), len(response), packed=False)
        return trainer_lp[0].float().cpu()

    def probe_diff(self, trainer_probe=None) -> float:
        """max |engine - trainer| log-prob over the probe's tokens (`trainer_probe` None: the trainer's now).
        The engine's come first: an engine that runs the FSDP policy itself makes the first forward through its
        root module, which per-layer FSDP needs before the trainer's own forward."""
        prompt, response = self.probe
        engine_lp = torch.tensor(self.engine.logprobs(prompt, response), dtype=torch.float32)
        trainer_lp = self.trainer_probe() if trainer_probe is None else trainer_probe
        return float((engine_lp - trainer_lp).abs().max())


def probe_tokens(tokenizer, vocab_size: int) -> tuple[list[int], list[int]]:
    """A few fixed tokens (prompt, response) whose log-probs the engine and the trainer must agree on."""
    ids = tokenizer("Question: what is 12 + 30? Answer: 42, since 12 + 30 = 42.", add_special_tokens=False)["input_ids"]
    ids = [i for i in ids if 0 <= i < vocab_size][:24]
    if len(ids) < 4:  # a tokenizer that maps the text to almost nothing: a fixed id pattern instead
        ids = [(7 * k + 3) % vocab_size for k in range(16)]
    half = len(ids) // 2
    return ids[:half], ids[half:]

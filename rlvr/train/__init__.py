"""The training loops and what they share.

RL: `runner.train(cfg)` runs a whole run (start or resume, the step loop, evaluations, checkpoints) around
`trainer.Trainer`, whose step is collect (collect.py) -> plan (plan.py) -> prepare (prepare.py) -> optimize
(optimize.py) -> sync (weights.py) -> metrics (step_metrics.py); docs/design.md, "The training step".
SFT: sft.py; expert iteration: expert_iter.py; both run from supervised_runs.py.
"""

"""The training loops (RL: runner.py; SFT: sft.py; expert iteration: expert_iter.py) and what they share.

A regular package, so that the import layers (pyproject.toml, [tool.importlinter]) see its modules."""

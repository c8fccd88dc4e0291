"""Classic RL environments (gymnasium) laid out as the same [N, T] batches (rlvr.envs.gym), and `rlvr train
task.name=gym:ENV_ID` runs of them (rlvr.envs.runner)."""

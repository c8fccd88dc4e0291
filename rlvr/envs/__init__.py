"""Classic RL environments (gymnasium) laid out as the same [N, T] batches (rlvr.envs.gym)."""

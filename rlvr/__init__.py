"""rlvr: reinforcement learning on language models with verifiable rewards."""

__version__ = "0.1.0"

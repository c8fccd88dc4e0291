from __future__ import annotations

import pytest

from rlvr.models.tiny import make_tiny_model


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): the default tiny model, shared; tests must not modify it."""
    return make_tiny_model(seed=0)


@pytest.fixture
def no_hub(monkeypatch):
    """Make any accidental Hugging Face hub request fail fast instead of retrying over the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

"""Every docstring example in rlvr.rewards runs and holds."""

import doctest
import importlib
import pkgutil

import pytest

import rlvr.rewards

MODULES = sorted(m.name for m in pkgutil.iter_modules(rlvr.rewards.__path__, "rlvr.rewards."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_reward_modules_have_examples():
    counted = sum(doctest.testmod(importlib.import_module(n)).attempted for n in MODULES)
    assert counted >= 30

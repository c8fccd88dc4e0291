"""Every docstring example in rlvr.tasks runs and holds."""

import doctest
import importlib
import pkgutil

import pytest

import rlvr.tasks

MODULES = sorted(m.name for m in pkgutil.iter_modules(rlvr.tasks.__path__, "rlvr.tasks."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0

"""Named registries: `dict[str, fn]` that refuse duplicates and explain unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict, Generic[F]):
    """A name -> function mapping. `kind` names what it holds, for error messages.

    >>> LOSSES = Registry("policy loss")
    >>> @LOSSES.register("pg")
    ... def pg(): ...
    >>> LOSSES["pgg"]
    Traceback (most recent call last):
    ...
    KeyError: "unknown policy loss 'pgg'; known: pg (did you mean 'pg'?)"
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            return fn

        return decorator

    def __missing__(self, name: str):
        raise KeyError(unknown_name_message(self.kind, name, self))


def unknown_name_message(kind: str, name: str, known) -> str:
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}; known: {', '.join(known)}{hint}"

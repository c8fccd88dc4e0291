"""Named registries: `dict[str, fn]` that refuse duplicates, explain unknown names, and keep what each entry
declares at registration (`needs`: the inputs it reads beyond the common ones, which the trainer, the config
checks and the studies ask for by capability, never by name)."""

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
        self._needs: dict[str, tuple[str, ...]] = {}
        self._checks: dict[str, Callable[..., list[str]]] = {}

    def register(self, name: str, *, needs: tuple[str, ...] = (),
                 check: Callable[..., list[str]] | None = None) -> Callable[[F], F]:
        """Register the decorated function as `name`; `needs` names what it reads beyond the common inputs
        (e.g. an advantage estimator's "group_ids", "values", "baseline_rewards"; a loss's
        "covariance_selection"); `check(**context)` returns the problems of a setting that uses it (the
        config checks call it before any work; for a policy loss the context is its `options`, the
        `aggregation` and whether the update is `off_policy`)."""

        def decorator(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            self._needs[name] = tuple(needs)
            if check is not None:
                self._checks[name] = check
            return fn

        return decorator

    def problems(self, name: str, **context) -> list[str]:
        """What `name`'s own check (given at registration) finds wrong with `context`; [] without a check."""
        check = self._checks.get(name)
        return list(check(**context) or []) if check is not None else []

    def needs(self, name: str) -> tuple[str, ...]:
        """What `name` declared it needs at registration (an unknown name raises the registry's KeyError)."""
        self[name]  # noqa: B018 (the lookup explains an unknown name)
        return self._needs.get(name, ())

    def having(self, need: str) -> tuple[str, ...]:
        """The names registered with `need` among their needs, in registration order."""
        return tuple(name for name in self if need in self._needs.get(name, ()))

    def __missing__(self, name: str):
        raise KeyError(unknown_name_message(self.kind, name, self))


def unknown_name_message(kind: str, name: str, known) -> str:
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}; known: {', '.join(known)}{hint}"

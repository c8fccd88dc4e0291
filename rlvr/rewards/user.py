"""Your own reward: a Python function named in the config, loaded and checked before any work.

`task.reward: "my_rewards.py:score"` (a file, relative to the working directory) or
`"my_package.module:score"` (an importable module) names a function

    def score(response: str, answer, **fields) -> float | bool | RewardResult | dict

called once per sampled response: `response` is the decoded text, `answer` the task's gold answer,
and `fields` the problem's other data (a JSONL / hub row's fields, or a generated problem's `meta`,
plus `question`). The function may name just the fields it needs (`def score(response, answer,
tests)`) or take `**fields`. A dict result is read as TRL-style components: `{"reward": 1.5,
"correct": True, "format": 1.0, "answer": 0.5}` (reward required; correct optional; every other
number is logged as a component). Without `correct`, a response is correct when its reward is at
least 1 (full credit), as for the built-in rewards.

By default the function runs in a worker process with a wall-clock limit per response
(`task.reward_timeout_s`): a call that raises or runs past it scores 0 and is counted
(`reward_errors`, `reward_timeouts`), and the run goes on. `task.reward_timeout_s: null` calls it
in the trainer's own process instead (faster; a hang then hangs the run).
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import inspect
import math
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlvr.rewards.base import REWARDS, RewardResult
from rlvr.rewards.worker import LineWorker, WorkerDied, WorkerTimeout

_WORKER_PATH = Path(__file__).with_name("_user_worker.py")


class RewardSpecError(ValueError):
    """A reward named in the config that cannot be loaded or called as a reward; the message says why."""


class RewardTimeout(TimeoutError):
    """A user's reward ran past task.reward_timeout_s (its worker was killed and restarted)."""


def is_user_spec(spec: str) -> bool:
    """True for "file.py:fn" / "pkg.module:fn"; False for a registered reward name ("math")."""
    return ":" in spec


def load_reward_fn(spec: str) -> Callable[..., Any]:
    """The function `spec` names ("path/to/file.py:fn" or "package.module:fn"), with its signature checked."""
    if not is_user_spec(spec):
        raise RewardSpecError(f"reward {spec!r} is not of the form 'file.py:function' or 'package.module:function'")
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise RewardSpecError(f"reward {spec!r}: expected 'file.py:function' or 'package.module:function'")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise RewardSpecError(f"reward {spec!r}: file {target} not found (looked for {path.resolve()}); "
                                  "paths are relative to the directory you run rlvr from")
        module_name = f"rlvr_user_reward_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            try:
                module_spec.loader.exec_module(module)
            except Exception as e:
                raise RewardSpecError(f"reward {spec!r}: importing {target} raised {type(e).__name__}: {e}") from e
            sys.modules[module_name] = module
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise RewardSpecError(f"reward {spec!r}: cannot import module {target!r} ({e}); "
                                  "install it, or name a file: 'path/to/file.py:function'") from None
        except Exception as e:
            raise RewardSpecError(f"reward {spec!r}: importing {target} raised {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise RewardSpecError(f"reward {spec!r}: {target} has no function {attr!r} "
                              f"(it defines: {', '.join(defined) or 'no functions'})")
    if not callable(fn):
        raise RewardSpecError(f"reward {spec!r}: {attr} is a {type(fn).__name__}, not a function")
    check_signature(fn, spec)
    return fn


def check_signature(fn: Callable[..., Any], spec: str) -> None:
    """`fn` must take (response, answer) positionally; anything else it requires must be a keyword."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_positional = any(p.kind == p.VAR_POSITIONAL for p in params)
    if len(positional) < 2 and not var_positional:
        raise RewardSpecError(f"reward {spec!r} must take (response, answer, **fields); its signature is {sig}")
    if any(p.kind == p.POSITIONAL_ONLY and p.default is p.empty for p in positional[2:]):
        raise RewardSpecError(f"reward {spec!r}: parameters after (response, answer) must be fields passed by "
                              f"name; its signature is {sig}")


def field_names(fn: Callable[..., Any]) -> tuple[set[str] | None, set[str]]:
    """(the field names `fn` accepts, None for any (**fields); the ones it requires)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None, set()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = {p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.default is p.empty}
    return accepted, required


def positional_names(fn: Callable[..., Any]) -> set[str]:
    """The names of `fn`'s first two parameters (response, answer), whatever it calls them."""
    try:
        params = list(inspect.signature(fn).parameters.values())[:2]
    except (TypeError, ValueError):
        return {"response", "answer"}
    return {p.name for p in params if p.kind != p.VAR_POSITIONAL} | {"response", "answer"}


def to_result(out: Any, spec: str) -> RewardResult:
    """A reward function's return value as a RewardResult (see the module docstring for the forms)."""
    if isinstance(out, RewardResult):
        return out
    if isinstance(out, Mapping):
        if "reward" not in out:
            raise TypeError(f"reward {spec!r} returned a dict without a 'reward' key (keys: {', '.join(map(str, out))})")
        reward = _number(out["reward"], spec, "reward")
        components = {str(k): _number(v, spec, str(k)) for k, v in out.items() if k not in ("reward", "correct")}
        correct = bool(out["correct"]) if "correct" in out else reward >= 1.0
        return RewardResult(reward=reward, correct=correct, components=components)
    value = _number(out, spec, "reward")
    return RewardResult(reward=value, correct=value >= 1.0)


def _number(value: Any, spec: str, what: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (str, bytes)):
        raise TypeError(f"reward {spec!r} returned {type(value).__name__} for {what!r}; expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"reward {spec!r} returned {type(value).__name__} for {what!r}; expected a number") from None
    if not math.isfinite(number):
        raise ValueError(f"reward {spec!r} returned a non-finite {what} ({number!r})")
    return number


class UserReward:
    """A user's reward function, called in this process: `reward(response, answer, fields)`."""

    takes_fields = True
    report_components = True

    def __init__(self, spec: str, fn: Callable[..., Any] | None = None):
        self.spec = spec
        self.fn = fn if fn is not None else load_reward_fn(spec)
        self.accepted, self.required = field_names(self.fn)
        self.positional = positional_names(self.fn)

    def check_fields(self, fields: Mapping[str, Any], where: str) -> None:
        """Raise RewardSpecError if the function requires a field that `fields` (one problem's) lacks."""
        missing = sorted(self.required - set(fields))
        if missing:
            raise RewardSpecError(f"reward {self.spec!r} needs field(s) {', '.join(missing)}, but the problem at "
                                  f"{where} has: {', '.join(sorted(fields)) or '(none)'}")

    def kwargs(self, fields: Mapping[str, Any] | None) -> dict[str, Any]:
        """The fields this function takes (all of them with **fields), less those named like its first two
        parameters (a row's own "answer" field is the `answer` argument already)."""
        fields = {k: v for k, v in (fields or {}).items() if k not in self.positional}
        return fields if self.accepted is None else {k: v for k, v in fields.items() if k in self.accepted}

    def __call__(self, response: str, answer: Any = None, fields: Mapping[str, Any] | None = None) -> RewardResult:
        kwargs = self.kwargs(fields)
        return to_result(self.fn(response, answer, **kwargs), self.spec)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"UserReward({self.spec!r})"


class IsolatedReward(UserReward):
    """A user's reward function run in a worker process, `timeout_s` of wall clock at most per call."""

    def __init__(self, spec: str, timeout_s: float, fn: Callable[..., Any] | None = None):
        super().__init__(spec, fn)  # loaded here too: the checks, and the field names, before any work
        self.timeout_s = float(timeout_s)
        self.timeouts = 0
        self._worker = LineWorker(_WORKER_PATH, name=f"worker of reward {spec!r}",
                                  hello={"spec": spec, "sys_path": list(sys.path), "cwd": os.getcwd()})

    def __call__(self, response: str, answer: Any = None, fields: Mapping[str, Any] | None = None) -> RewardResult:
        kwargs = self.kwargs(fields)
        payload = base64.b64encode(pickle.dumps((response, answer, kwargs))).decode("ascii")
        try:
            reply = self._worker.request({"call": payload}, self.timeout_s)
        except WorkerTimeout:
            self.timeouts += 1
            raise RewardTimeout(f"reward {self.spec!r} ran past task.reward_timeout_s={self.timeout_s:g} s; "
                                "the call was killed and scores 0") from None
        except WorkerDied as e:
            raise RuntimeError(f"reward {self.spec!r}: {e}") from None
        if "error" in reply:
            raise RuntimeError(f"reward {self.spec!r} raised (in its worker):\n{reply['error']}")
        return RewardResult(reward=float(reply["reward"]), correct=bool(reply["correct"]),
                            components={k: float(v) for k, v in reply["components"].items()})

    def close(self) -> None:
        self._worker.close()

    def __repr__(self) -> str:
        return f"IsolatedReward({self.spec!r}, timeout_s={self.timeout_s:g})"


def check_reward_spec(spec: str) -> None:
    """Raise RewardSpecError unless `spec` is a registered reward or a loadable, callable user function."""
    if is_user_spec(spec):
        load_reward_fn(spec)
    elif spec not in REWARDS:
        from rlvr.core.registry import unknown_name_message

        raise RewardSpecError(unknown_name_message("reward", spec, REWARDS)
                              + "; or name your own function: 'file.py:function' / 'package.module:function'")


def make_reward(spec: str, timeout_s: float | None) -> Callable[..., Any]:
    """A registered reward by name, or a user's function (isolated unless `timeout_s` is None)."""
    check_reward_spec(spec)
    if not is_user_spec(spec):
        return REWARDS[spec]
    return UserReward(spec) if timeout_s is None else IsolatedReward(spec, timeout_s)


def serve(hello: dict[str, Any], stdin, out) -> None:
    """The worker's loop (rlvr/rewards/_user_worker.py): load the function, then answer calls."""
    import json

    try:
        reward = UserReward(hello["spec"])
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises with the message
        out.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    for line in stdin:
        try:
            response, answer, kwargs = pickle.loads(base64.b64decode(json.loads(line)["call"]))
            result = reward(response, answer, kwargs)
            reply = {"reward": result.reward, "correct": bool(result.correct),
                     "components": {k: float(v) for k, v in result.components.items()}}
        except Exception as e:  # noqa: BLE001 - the parent counts it and scores the sample 0
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            reply = {"error": "".join(tb)[-4000:]}
        out.write(json.dumps(reply) + "\n")

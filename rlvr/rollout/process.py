"""A rollout engine in a worker process of its own (`rollout.worker: process`).

`ProcessEngine` keeps the engine contract (generate, update_weights with a policy version, logprobs for the
sync probe, close) and forwards every call to a worker process that holds the real engine (`hf`, or `vllm`
where installed) on its own copy of the weights, with its own torch threads. The trainer and the worker
share one set of weight buffers in shared memory: a push copies the trainer's tensors into them, then the
worker loads them into its engine (`update_weights` returns once it has, so the buffers are never written
while the worker reads them). No file is written on the way.

Requests and replies travel on two queues, one at a time. A worker that raises sends its error back (the
caller raises it, naming the worker); a worker that dies or stops answering within `timeout_s` is reported
with its exit code, never waited on forever. The worker's copy lives on the trainer's device (a GPU rank's
worker shares its GPU; the weights still travel through host memory, not yet by NCCL broadcast into vLLM's
weight-update API; this path has not run on a GPU yet).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import time
import traceback
from typing import Any

import torch

from rlvr.rollout.base import RolloutBatch, RolloutEngine, SamplingParams, state_tensors


class RolloutWorkerError(RuntimeError):
    """The rollout worker process raised, died, or did not answer in time."""


class ProcessEngine(RolloutEngine):
    """The engine `engine` (a registered name) built in a spawned worker process on a copy of `model`.

    `dtype`: the worker's copy's precision (None: the model's); `threads`: the worker's torch threads;
    `engine_kwargs` go to the inner engine's constructor."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, engine: str = "hf", dtype: torch.dtype | None = None,
                 threads: int = 1, timeout_s: float = 600.0, start_timeout_s: float = 300.0,
                 engine_kwargs: dict[str, Any] | None = None):
        import torch.multiprocessing as mp

        if engine == "process":
            raise ValueError("the worker's engine must be a real engine (hf, vllm), not 'process'")
        self.engine_name = engine
        self.timeout_s = float(timeout_s)
        self.shared = {name: t.detach().to("cpu").clone().share_memory_() for name, t in model.state_dict().items()}
        """The weight buffers both processes see: the trainer writes them, the worker loads them."""
        own_dtype = dtype or next(model.parameters()).dtype
        self.lower_precision = own_dtype != next(model.parameters()).dtype
        """The worker samples from a lower-precision copy (its probe gap is precision, not a failed push)."""
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch thread pools or locks
        self._requests = ctx.Queue()
        self._replies = ctx.Queue()
        device = next(model.parameters()).device  # the worker's copy lives beside the trainer's (its GPU, or the CPU)
        spec = {"model_class": type(model), "config": model.config, "dtype": own_dtype, "device": str(device),
                "tokenizer": tokenizer, "engine": engine, "engine_kwargs": dict(engine_kwargs or {}), "threads": int(threads)}
        self.process = ctx.Process(target=_worker_main, args=(spec, self.shared, self._requests, self._replies),
                                   name=f"rlvr-rollout-{engine}", daemon=True)
        with _main_module_hidden():
            self.process.start()
        self._reply("start", start_timeout_s)  # the worker answers once its engine is built

    # --- the engine contract ---------------------------------------------------------------------------------

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        return self._call("generate", [list(p) for p in prompt_ids], params)

    @torch.no_grad()
    def update_weights(self, model_or_state_dict: Any, version: int | None = None) -> None:
        """Copy the weights into the shared buffers (strict: the same names and shapes), then have the worker
        load them; returns once it has."""
        tensors = state_tensors(model_or_state_dict)
        missing = sorted(set(self.shared) - set(tensors))
        extra = sorted(set(tensors) - set(self.shared))
        if missing or extra:
            raise ValueError(f"update_weights: the weights do not match the worker's model (missing: {missing[:3]}, "
                             f"unexpected: {extra[:3]})")
        for name, tensor in tensors.items():
            buffer = self.shared[name]
            if buffer.shape != tensor.shape:
                raise ValueError(f"update_weights: {name} has shape {tuple(tensor.shape)}, the worker's model "
                                 f"{tuple(buffer.shape)}")
            buffer.copy_(tensor.detach())
        self._call("update", version)
        if version is not None:
            self.policy_version = int(version)

    @property
    def record_routes(self) -> bool:
        """The inner engine records the MoE routes it samples with (routing replay R3; the hf engine)."""
        return bool(self._call("get", "record_routes"))

    @record_routes.setter
    def record_routes(self, value: bool) -> None:
        self._call("set", "record_routes", bool(value))

    @torch.no_grad()
    def weight_sync_error(self, reference: Any) -> float:
        """Max |worker's copy - `reference` cast to the worker's dtype| over every tensor (0.0: in sync), from
        both sides of the shared buffers: `reference` (the model or state dict pushed) against the buffers
        here, the buffers against the worker's copy there."""
        tensors = state_tensors(reference)
        if set(tensors) != set(self.shared):
            return float("inf")
        here = max((float((self.shared[n] - t.detach().to(self.shared[n].dtype).cpu()).abs().max()) for n, t in tensors.items()),
                   default=0.0)
        there = self._call("sync_error")
        return here if there is None else max(here, there)

    def logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        return self._call("logprobs", list(prompt_ids), list(response_ids))

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self._requests.put(("close",))
                self.process.join(timeout=10)
            except (OSError, ValueError):
                pass
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)

    # --- the request / reply protocol ------------------------------------------------------------------------

    def _call(self, op: str, *args: Any) -> Any:
        if not self.process.is_alive():
            raise RolloutWorkerError(self._dead())
        self._requests.put((op, *args))
        return self._reply(op, self.timeout_s)

    def _reply(self, op: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status, value = self._replies.get(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise RolloutWorkerError(self._dead()) from None
                if time.monotonic() > deadline:
                    self.process.terminate()
                    raise RolloutWorkerError(
                        f"the rollout worker ({self.engine_name}) did not answer {op!r} within {timeout_s:g}s "
                        "(rollout.worker_timeout_s); "
                        "it was stopped") from None
        if status == "error":
            raise RolloutWorkerError(f"the rollout worker ({self.engine_name}) failed in {op!r}: {value}")
        return value

    def _dead(self) -> str:
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return (f"the rollout worker process ({self.engine_name}) died ({how}); the run stops here and resumes from "
                "its last checkpoint with --resume")


@contextlib.contextmanager
def _main_module_hidden():
    """Start the worker without re-running the caller's script: spawn imports `__main__` in the child by its
    path, which re-executes a script that starts training at import (no `if __name__ == "__main__":`
    guard). The worker needs nothing from it (its entry point and arguments come from rlvr and torch)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for k in saved:
            setattr(main, k, None) if k == "__spec__" else delattr(main, k)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _worker_main(spec: dict[str, Any], shared: dict[str, torch.Tensor], requests, replies) -> None:
    """The worker: build the engine on a copy of the shared weights, then answer requests until "close"."""
    try:
        torch.set_num_threads(spec["threads"])
        from rlvr.rollout.base import get_engine

        model = spec["model_class"](spec["config"]).to(device=spec["device"], dtype=spec["dtype"])
        model = model.eval().requires_grad_(False)
        model.load_state_dict(shared, strict=True)
        engine = get_engine(spec["engine"], model, spec["tokenizer"], **spec["engine_kwargs"])
    except BaseException as exc:  # noqa: BLE001 (every failure is reported to the trainer, then the worker ends)
        replies.put(("error", _describe(exc)))
        return
    replies.put(("ok", None))
    while True:
        op, *args = requests.get()
        if op == "close":
            engine.close()
            return
        try:
            if op == "generate":
                value = engine.generate(*args)
            elif op == "update":
                engine.update_weights(shared, args[0])
                value = None
            elif op in ("get", "set"):
                if not hasattr(engine, args[0]):
                    raise AttributeError(f"the {spec['engine']} engine has no {args[0]!r}")
                value = getattr(engine, args[0]) if op == "get" else setattr(engine, args[0], args[1])
            elif op == "sync_error":  # the engine's own check of its copy (None: it has none, e.g. vllm's)
                check = getattr(engine, "weight_sync_error", None)
                value = check(shared) if check is not None else None
            elif op == "logprobs":
                value = engine.logprobs(*args)
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001
            replies.put(("error", _describe(exc)))
            continue
        replies.put(("ok", value))


def _describe(exc: BaseException) -> str:
    """The error in one line, then where it happened (the last frames)."""
    frames = traceback.format_tb(exc.__traceback__)[-3:]
    return f"{type(exc).__name__}: {exc}\n" + "".join(frames).rstrip()

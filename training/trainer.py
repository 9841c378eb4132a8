"""The trainer process: `python -m training.trainer RUN_DIR` fine-tunes a LoRA adapter.

Design decisions:
- A process of its own (started by `training.launcher.launch` in its own process group), so the
  app stays responsive, a crash cannot take the app down, and cancelling is a signal. It never
  opens the DuckDB store: everything it needs is in RUN_DIR (`manifest.json` with the config
  and the snapshot's id and hash, `train.jsonl` with the snapshot's examples), and everything
  it reports goes there too. The run folder's files are the interface (`training.run_folder`):
  `status.json` (state running/completed/failed/cancelled, pid, times, reason, final
  metrics), `metrics.jsonl` (one line per optimizer step), `trainer.log`,
  `checkpoints/step-N/` and the final `adapter/` (adapter_config.json and
  adapter_model.safetensors, loadable with `PeftModel.from_pretrained`).
- A plain PyTorch loop over PEFT's LoRA model rather than `transformers.Trainer`: fewer
  moving parts, faster start-up, and the data order and checkpoint contents are ours to
  define. AdamW on the LoRA parameters only, linear warm-up then linear decay (the first step
  already has a non-zero rate), gradient norm clipped at 1, loss averaged over the
  assistant's tokens of the batch (the labels from `training.data`), bf16 autocast when
  `TrainConfig.precision` asks for it.
- Speed (measured with bench/train_throughput.py, figures in docs/benchmarks.md): under bf16
  autocast the frozen base model is stored in bf16, so autocast does
  not cast 100M+ weights again at every forward, and PEFT is told not to cast each LoRA
  input back to fp32 (the adapter's own weights stay fp32 for the optimizer; autocast runs
  its matrix products in bf16 anyway): 11% faster than bf16 linear weights with an fp32
  residual stream, and half the weight memory. On a CPU the attention is the plain (eager)
  one: for short sequences its backward was faster than the fused kernel's (10%). The loss
  computes the output head only at the positions that carry a label (`selected_loss`): for
  short answers after a long prompt that skips most of a 49,152-wide vocabulary projection
  and its softmax. Models whose head does more than a plain projection (logit soft-capping
  or scaling) take the model's own loss.
- Checkpoints hold the adapter, optimizer, scheduler, RNG states and the data position
  (epoch, next batch), in safetensors and JSON, never a pickle (`training.checkpoint`: a
  tampered checkpoint can fail to load, not run code). They are written to `step-N.partial`
  and renamed, so a kill mid-save leaves the previous checkpoint intact; only the last
  `keep_checkpoints` stay. On start the trainer continues from the latest checkpoint: the
  step counter and the data position carry on (bit-identical results to an uninterrupted
  run are not promised), and metrics lines past the checkpoint, from the interrupted attempt,
  are dropped so each step has one line.
- Every JSON file is written to a temporary name and renamed; a reader never sees half of
  `status.json`. `metrics.jsonl` is appended line by line; readers skip a partial last line.
- One optimisation loop (`optimize`) serves SFT and DPO: each brings its data's lengths and
  a per-batch loss. A DPO run (`TrainConfig.method == "dpo"`) is handed to
  `training.dpo.train_dpo`; why it is not TRL's `DPOTrainer` is said there.
- Endings: success -> completed (exit 0); any exception (out of memory, bad data, a
  missing model) -> failed with a one-line reason, traceback in trainer.log (exit 1);
  SIGTERM -> nothing more is saved, status cancelled (exit 143).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from curation._files import private_umask
from curation.errors import CurateError
from training.checkpoint import (POSITION, load_adapter_weights, load_training_state,
                                 save_training_state, unfit_state)
from training.config import TrainConfig
from training.data import IGNORE_INDEX
from training.processes import EXIT_CANCELLED, Cancelled, raise_on_sigterm
from training.run_folder import (ADAPTER, CHECKPOINTS, LOG, MANIFEST, METRICS, TRAIN_FILE,
                                 RunManifest, checkpoint_dirs, now_iso, read_json, read_metrics,
                                 update_status, write_json)

MAX_GRAD_NORM = 1.0


# --- the process ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    private_umask()  # checkpoints, adapter and logs are the user's alone, however started
    # Idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning
    # threads made a training step ten times slower. Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bars in the log
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.trainer RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0]).resolve()
    if not (run_dir / MANIFEST).is_file():
        print(f"{run_dir} is not a run folder (no {MANIFEST})", file=sys.stderr)
        return 2
    log = _logger(run_dir)
    update_status(run_dir, state="running", pid=os.getpid(), started_at=now_iso(),
                  ended_at=None, reason=None, final=None)
    log.info("trainer started, pid %d", os.getpid())
    try:
        final = train(run_dir, log)
    except Cancelled:
        log.info("cancelled (SIGTERM); nothing more is saved")
        update_status(run_dir, state="cancelled", ended_at=now_iso(),
                      reason="cancelled by request")
        return EXIT_CANCELLED
    except BaseException as exc:  # every failure must end in a status
        reason = _reason(exc)
        log.exception("failed: %s", reason)
        update_status(run_dir, state="failed", ended_at=now_iso(), reason=reason)
        return 1
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # done: too late to cancel
        update_status(run_dir, state="completed", ended_at=now_iso(), final=final)
        log.info("completed: %s", final)
        return 0
    finally:
        for handler in log.handlers:
            handler.close()
        log.handlers.clear()


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger("curate.trainer")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers = [logging.FileHandler(run_dir / LOG, encoding="utf-8")]
    if sys.stderr.isatty():
        handlers.append(logging.StreamHandler())
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    return log


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, CurateError):
        return text
    step = getattr(exc, "curate_step", None)
    where = f" at step {step}" if step else ""
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or \
            "can't allocate memory" in text.lower():
        return (f"out of memory{where}; lower batch_size or max_seq_length "
                f"({type(exc).__name__}: {text[:200]})")
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}{where}: {text[:300]} (traceback in trainer.log)"


# --- training -------------------------------------------------------------------------------

def use_bf16(precision: str, device: str) -> bool:
    """Whether to autocast to bf16: 'auto' means on CUDA with bf16 support or on a CPU with
    AMX/AVX-512-bf16 instructions."""
    import torch

    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    from curation.embeddings import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


def cpu_threads() -> int:
    """Threads for CPU training: `$CURATE_TRAIN_THREADS`, else every CPU this process may
    use. Measured on a shared 2-core machine with a load average of 4-5 from other work:
    2 threads trained 1.5-1.8x faster than 1 (idle OpenMP threads sleep, see `main`), so
    the load of the moment is not subtracted (the 1-minute load average also lags: right
    after another heavy job it would leave a free machine with one thread)."""
    if os.environ.get("CURATE_TRAIN_THREADS", "").isdigit():
        return max(1, int(os.environ["CURATE_TRAIN_THREADS"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps (never 0 at the first step), then linear decay."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def train(run_dir: Path, log: logging.Logger) -> dict[str, Any]:
    """Train (or continue training) the run in `run_dir`; returns the final metrics."""
    manifest = RunManifest.read(run_dir / MANIFEST)
    if not manifest.config:
        raise CurateError(f"{run_dir / MANIFEST} is missing or has no config")
    config = TrainConfig.from_dict(manifest.config)
    if config.method == "dpo":  # preference pairs: the same process, files and checkpoints
        from training.dpo import train_dpo

        return train_dpo(run_dir, log, config, manifest)

    from training.data import collate, load_train_data
    from training.models import load_model

    cache, device, bf16 = runtime(run_dir, config, manifest)
    model, tokenizer = load_model(config.base_model, cache, device=device)
    data = load_train_data(run_dir / TRAIN_FILE, tokenizer, config.max_seq_length)

    def batch_loss(model, indices: list[int]):
        batch = collate([data.examples[i] for i in indices], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        return selected_loss(model, batch), int(batch["attention_mask"].sum()), {}

    return optimize(run_dir, log, config, model, lengths=data.lengths(), report=data.report,
                    device=device, bf16=bf16, batch_loss=batch_loss)


def runtime(run_dir: Path, config: TrainConfig, manifest: RunManifest
            ) -> tuple[Path, str, bool]:
    """(model cache, device, whether to autocast to bf16) of a run, with the CPU threads
    and the seed set."""
    import torch

    cache = Path(os.environ.get("CURATE_MODEL_CACHE") or manifest.model_cache or
                 run_dir.parent.parent / "models")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(cpu_threads())
    torch.manual_seed(config.seed)
    return cache, device, use_bf16(config.precision, device)


BatchLoss = Callable[[Any, list[int]], tuple[Any, int, dict[str, float]]]


def optimize(run_dir: Path, log: logging.Logger, config: TrainConfig, model, *,
             lengths: list[int], report: dict[str, Any], device: str, bf16: bool,
             batch_loss: BatchLoss) -> dict[str, Any]:
    """The optimisation loop of SFT and DPO alike; returns the final metrics.

    `model` gets a fresh LoRA adapter, or the last checkpoint's (`lora_training`). The items
    (conversations or pairs, of token `lengths`) are batched by `plan_batches`; for each
    batch `batch_loss(model, item indices)` returns (loss tensor, tokens, extra metrics),
    computed under bf16 autocast when `bf16`. One AdamW step per batch, one metrics line per
    step (the extras merged in), a checkpoint every `checkpoint_every_steps`, the adapter at
    the end. `report` describes the data (status.json's `data`)."""
    import torch

    from training.data import padding_fraction, plan_batches

    steps_per_epoch = math.ceil(len(lengths) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = math.ceil(total * config.warmup_ratio)
    padding = padding_fraction(lengths, plan_batches(lengths, config.batch_size, config.seed, 0))
    log.info("%s data: %s; padding %.1f%%; %d steps (%d per epoch), device %s (%d threads), %s",
             config.method.upper(), report, 100 * padding, total, steps_per_epoch, device,
             torch.get_num_threads(), "bf16 autocast" if bf16 else "fp32")

    model, params, optimizer, scheduler, (step, epoch, next_batch) = lora_training(
        model, config, run_dir, log, device=device, bf16=bf16, warmup=warmup, total=total)
    update_status(run_dir, total_steps=total, resumed_from_step=step or None, data=report,
                  trainable_parameters=sum(p.numel() for p in params), device=device,
                  precision="bf16" if bf16 else "fp32", method=config.method)

    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)
    session_start, session_steps, last = time.perf_counter(), 0, {}
    with open(run_dir / METRICS, "ab") as metrics_file:
        for ep in range(epoch, config.epochs):
            batches = plan_batches(lengths, config.batch_size, config.seed, ep)
            for index in range(next_batch if ep == epoch else 0, len(batches)):
                started = time.perf_counter()
                try:
                    with autocast, _no_input_casts(model, bf16):
                        loss, tokens, extra = batch_loss(model, batches[index])
                    if not torch.isfinite(loss):
                        raise CurateError(f"the loss became {loss.item()} at step {step + 1}; "
                                          "lower learning_rate")
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                    lr = scheduler.get_last_lr()[0]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                except Exception as exc:
                    try:
                        exc.curate_step = step + 1
                    except AttributeError:
                        pass
                    raise
                step += 1
                session_steps += 1
                now = time.perf_counter()
                per_step = (now - session_start) / session_steps
                last = {"step": step, "epoch": round(ep + (index + 1) / len(batches), 4),
                        "loss": round(loss.item(), 6), "learning_rate": lr,
                        "tokens": tokens, "tokens_per_second": round(tokens / (now - started), 1),
                        "eta_seconds": round(per_step * (total - step), 1),
                        "total_steps": total, "time": round(time.time(), 3), **extra}
                metrics_file.write(orjson.dumps(last) + b"\n")
                metrics_file.flush()
                log.info("step %d/%d loss %.4f%s lr %.2e %.0f tok/s", step, total, last["loss"],
                         "".join(f" {k.replace('_', ' ')} {v:.4g}" for k, v in extra.items()),
                         lr, last["tokens_per_second"])
                if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
                        and step < total):
                    position = (ep, index + 1) if index + 1 < len(batches) else (ep + 1, 0)
                    _save_checkpoint(run_dir, step, position, model, optimizer, scheduler,
                                     config.keep_checkpoints)
    _save_adapter(model, run_dir / ADAPTER)
    return {**last, "steps": step, "wall_seconds_this_session":
            round(time.perf_counter() - session_start, 1)}


def lora_training(model, config: TrainConfig, run_dir: Path, log: logging.Logger, *,
                  device: str, bf16: bool, warmup: int, total: int):
    """The base model wrapped with a fresh LoRA adapter, its trainable parameters, AdamW and
    the warm-up schedule, restored from the run's last checkpoint if there is one (then the
    metrics past it are dropped): (model, params, optimizer, scheduler, (step, epoch, next
    batch)). Shared by SFT (`train`) and DPO (`training.dpo.train_dpo`)."""
    import torch
    from peft import LoraConfig, get_peft_model

    if bf16:
        model.to(torch.bfloat16)  # frozen; the adapter PEFT adds stays fp32
    if device == "cpu":
        _eager_attention(model)
    model = get_peft_model(model, LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=config.target_modules_list(), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total))
    position = (0, 0, 0)
    checkpoints = checkpoint_dirs(run_dir)
    if checkpoints:
        position = _load_checkpoint(checkpoints[-1], model, optimizer, scheduler)
        log.info("resuming from %s: step %d, epoch %d, batch %d", checkpoints[-1].name,
                 *position)
    _keep_metrics_up_to(run_dir, position[0])
    return model, params, optimizer, scheduler, position


def _no_input_casts(model, bf16: bool):
    """PEFT's LoRA layers cast their input to the adapter's dtype (fp32); under bf16
    autocast that is a cast there and back for every adapted layer, so it is switched off."""
    import contextlib

    if not bf16:
        return contextlib.nullcontext()
    try:
        from peft.helpers import disable_input_dtype_casting
    except ImportError:  # PEFT < 0.14
        return contextlib.nullcontext()
    return disable_input_dtype_casting(model)


def _eager_attention(model) -> None:
    """Plain matmul-softmax attention: for the short sequences of CPU training the fused
    scaled-dot-product kernel's backward was slower (a step 10% faster without it)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        model.config._attn_implementation = "eager"


def decoder_and_head(model):
    """(decoder, output head) of a causal LM (through a PEFT wrapper), so the head can run
    at chosen positions only; None when the model has no separate decoder or its head does
    more than a plain projection (logit soft-capping or scaling): then take its own output."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is None or head is None or any(
            getattr(base.config, name, None) for name in
            ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    return decoder, head


def selected_loss(model, batch: dict[str, Any]):
    """Mean cross-entropy over the labelled (assistant) tokens, as the model's own loss, but
    with the output head applied only at the positions that predict a labelled token."""
    import torch

    split = decoder_and_head(model)
    if split is None:
        return model(**batch).loss
    decoder, head = split
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _save_adapter(model, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def _save_checkpoint(run_dir: Path, step: int, position: tuple[int, int], model, optimizer,
                     scheduler, keep: int) -> None:
    import random

    import torch

    target = run_dir / CHECKPOINTS / f"step-{step}"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_training_state(partial, {"optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "rng": rng})
    write_json(partial / POSITION, {"step": step, "epoch": position[0],
                                    "next_batch": position[1]})
    shutil.rmtree(target, ignore_errors=True)  # left by an earlier attempt past this step
    os.replace(partial, target)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[int, int, int]:
    """Restore the adapter, optimizer, scheduler and RNG states of the checkpoint in
    `folder` (no pickle: `training.checkpoint`); (step, epoch, next batch)."""
    import random

    import torch
    from peft import set_peft_model_state_dict

    state = load_training_state(folder)  # checks the whole folder first
    set_peft_model_state_dict(model, load_adapter_weights(folder))
    try:  # the files read; what they hold may still not fit (edited JSON): BadCheckpoint
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise unfit_state(folder, exc) from None
    position = read_json(folder / POSITION)
    return int(position["step"]), int(position["epoch"]), int(position["next_batch"])


def _keep_metrics_up_to(run_dir: Path, step: int) -> None:
    """Drop metrics lines after `step` (an interrupted attempt's), rewriting atomically."""
    path = run_dir / METRICS
    if not path.exists():
        return
    rows = [r for r in read_metrics(run_dir) if r["step"] <= step]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())

"""DPO training: a LoRA adapter trained on preference pairs, in the trainer's own loop.

A DPO run is a run folder like an SFT run (`training.run_folder`), with `pairs.jsonl` (one
`PreferencePair` per line, written by the launcher from the snapshot) in place of the
conversations of `train.jsonl`. `training.trainer` hands a run whose `TrainConfig.method` is
'dpo' to `train_dpo`; the process, status, metrics, cancel (SIGTERM) and resume are the
trainer's.

Design decisions:
- The DPO loss of Rafailov et al. (2023), sigmoid form, as TRL's `DPOTrainer` computes it
  by default: `-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`, where `pi_*`/`ref_*`
  are the summed log-probabilities of the chosen/rejected continuation's tokens (the
  assistant turns after the prompt, end-of-turn token included) under the tuned model and the
  reference. The reference is the starting model itself: the LoRA adapter switched off
  (`disable_adapter()`), as TRL does for a PEFT model, so no second copy of the weights.
- tests/test_dpo_trl_parity.py checks this against TRL's `DPOTrainer` on the same model,
  adapter and pairs. TRL, given conversational pairs, also scores the newline the chat
  template puts after the answer's end-of-turn token; Curate does not (the model never
  generates it, and the SFT trainer does not train it either).
- Implemented here rather than by running TRL's `DPOTrainer` (trl is a dependency and the
  loss is the same formula): `DPOTrainer` is a `transformers.Trainer`, whose checkpoints
  are pickles (`optimizer.pt`, `scheduler.pt`, `rng_state.pth`, `training_args.bin`,
  written with `torch.save`) and whose resume reloads them. Curate's run folders hold no
  pickle (`training.checkpoint` refuses one, so a planted file cannot run code on resume),
  and Curate's live view, cancel and resume read the folder's own files (`metrics.jsonl`,
  `status.json`, `checkpoints/step-N/` with the data position). Fitting `DPOTrainer` to
  that contract means replacing its saving, loading, data order and logging; DPO runs in
  the SFT trainer's loop instead (`training.trainer.optimize`, with its bf16 handling,
  checkpoints and resume) with a per-batch DPO loss, so SFT and DPO runs behave the same in
  the app and the CLI.
- `TrainConfig.sft_weight` adds TRL's 'sft' loss term (the mean negative log-likelihood of
  the chosen sides' tokens) to the sigmoid loss, as TRL's `loss_type=["sigmoid", "sft"]`
  with `loss_weights=[1, sft_weight]` does (RPO, Pang et al. 2024): DPO alone widens the
  gap between chosen and rejected but may lower the likelihood of both.
- A pair's two sides share their prompt, and often the start of the answer too: the
  shared prefix is computed once (`pack_pairs`: one row holds the prefix, the chosen rest
  and the rejected rest, with a 4-D attention mask that keeps the two rests apart and
  position ids that start both where the prefix ends), which gives what the two sides give
  apart (tested) on fewer tokens. The output head runs only at the positions that predict a
  continuation token (as in the SFT trainer's `selected_loss`).
- The reference's log-probabilities are computed once per pair, in the first epoch (or the
  first after a resume), and kept in memory: the reference never changes, and later epochs
  skip its forward pass (a third of a step's work), as TRL's `precompute_ref_log_probs` does
  up front.
- Optionally on top of an SFT run (`TrainConfig.sft_run`): its adapter is merged into the
  base weights first, so the merged model is both the starting point and the reference.
- Each metrics line carries, besides the loss, DPO's implicit rewards of the batch
  (`beta * (pi - ref)`): `reward_accuracy` (share of pairs whose chosen reward is higher)
  and `reward_margin` (mean chosen minus rejected reward), as TRL logs them.
- Pairs are batched by length like conversations (`training.data.plan_batches`, on the
  longer side of each pair), so a resumed run rebuilds the same plan. A pair is cut at
  `max_seq_length` per side (prompt kept); a pair left with no continuation token on a side,
  or with identical sides, is skipped and counted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from curation.errors import CurateError, EmptyTrainingSet, InvalidValue
from curation.preference import PreferencePair, preference_pairs
from training.config import TrainConfig
from training.data import IGNORE_INDEX, Encoded, encode
from training.run_folder import PAIRS_FILE

# --- pairs from the store, on disk ---------------------------------------------------------

def snapshot_pairs(store, snapshot_id: str) -> list[PreferencePair]:
    """The preference pairs of a snapshot: the one place training asks the store for them
    (preference storage is `curation.preference`'s)."""
    return preference_pairs(store, snapshot_id)


def eval_pairs(store, user) -> list[PreferencePair]:
    """The eval split's preference pairs now (not rejected), through a snapshot of the eval
    split, as evaluation examples are read."""
    from curation.query import ExampleFilter
    from training.eval import EVAL_STATUSES

    where = ExampleFilter(split=("eval",), status=EVAL_STATUSES)
    if not store.count(where):
        return []
    snapshot = store.snapshot(where, actor=user.name)
    return [p for p in snapshot_pairs(store, snapshot.id) if p.split == "eval"]


def start_from_sft(runs_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """The manifest's `extra` for a DPO run started from `config.sft_run` ({} without one):
    `InvalidValue` unless that run is a completed SFT run, with its adapter, on the same
    base model."""
    if not config.sft_run:
        return {}
    from training.launcher import find_run, read_run

    run = read_run(find_run(runs_dir, config.sft_run))
    method = (run.manifest.config or {}).get("method", "sft")
    if method != "sft" or run.state != "completed" or \
            not (run.adapter_dir / "adapter_config.json").is_file():
        raise InvalidValue(f"run {run.id} cannot be started from: it is a {method} run, "
                           f"{run.state}; choose a completed SFT run")
    if run.manifest.base_model != config.base_model:
        raise InvalidValue(f"run {run.id} tuned {run.manifest.base_model}, not "
                           f"{config.base_model}; DPO must start from the same base model")
    return {"sft_run": run.id, "sft_adapter": str(run.adapter_dir)}


# --- pairs on disk --------------------------------------------------------------------------

def write_pairs(path: str | os.PathLike, pairs: list[PreferencePair]) -> int:
    """Write `pairs` as JSON lines; the number written."""
    data = b"".join(orjson.dumps(asdict(p)) + b"\n" for p in pairs)
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(pairs)


def read_pair(raw: dict[str, Any]) -> PreferencePair:
    """A pair from its JSON object (`dataclasses.asdict` of a `PreferencePair`)."""
    return PreferencePair(example_id=int(raw["example_id"]), prompt=tuple(raw["prompt"]),
                          chosen=tuple(raw["chosen"]), rejected=tuple(raw["rejected"]),
                          split=str(raw.get("split") or "train"))


def read_pairs(path: str | os.PathLike, split: str | None = None) -> list[PreferencePair]:
    """The pairs in a `write_pairs` file (only those of `split` when given)."""
    path = Path(path)
    pairs = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pair = read_pair(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise InvalidValue(f"{path.name} line {number} is no preference pair "
                                   f"({type(exc).__name__}: {exc})") from None
            if split is None or pair.split == split:
                pairs.append(pair)
    return pairs


# --- encoding -------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedPair:
    """A pair's two sides as token ids, labels masked to the continuation's tokens."""

    example_id: int
    chosen: Encoded
    rejected: Encoded

    @property
    def length(self) -> int:
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


def encode_side(tokenizer, prompt: tuple | list, answer: tuple | list,
                max_seq_length: int) -> Encoded:
    """The prompt followed by one answer, with labels only on the answer's assistant turns
    (not on assistant turns inside the prompt), cut to `max_seq_length`."""
    in_prompt = sum(1 for m in prompt if m.get("role") == "assistant")
    return encode(tokenizer, [dict(m) for m in (*prompt, *answer)], max_seq_length,
                  skip_assistant_turns=in_prompt)


def encode_pairs(tokenizer, pairs: list[PreferencePair], max_seq_length: int
                 ) -> tuple[list[EncodedPair], dict[str, Any]]:
    """Encode pairs for training or scoring; (encoded, report). Skipped: a side without a
    continuation token within `max_seq_length`, or both sides the same after the cut."""
    out, skipped, truncated = [], 0, 0
    for pair in pairs:
        if not pair.chosen or not pair.rejected:
            skipped += 1
            continue
        chosen = encode_side(tokenizer, pair.prompt, pair.chosen, max_seq_length)
        rejected = encode_side(tokenizer, pair.prompt, pair.rejected, max_seq_length)
        truncated += chosen.truncated or rejected.truncated
        if not chosen.target_tokens or not rejected.target_tokens or \
                chosen.input_ids == rejected.input_ids:
            skipped += 1
            continue
        out.append(EncodedPair(pair.example_id, chosen, rejected))
    lengths = [p.length for p in out]
    report = {"pairs": len(out), "skipped": skipped, "truncated": truncated,
              "tokens": sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in out),
              "max_length": max(lengths, default=0),
              "mean_length": round(sum(lengths) / len(lengths), 1) if lengths else 0}
    return out, report


def collate_pairs(pairs: list[EncodedPair], pad_token_id: int) -> dict[str, Any]:
    """One batch of 2n rows: the n chosen sides, then the n rejected sides."""
    from training.data import collate

    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_token_id)


# --- log-probabilities and the loss ---------------------------------------------------------

def sequence_logps(model, batch: dict[str, Any]):
    """Per row, the summed log-probability of its labelled tokens (a float32 tensor of the
    batch's rows). The output head runs at labelled positions only."""
    import torch

    from training.trainer import decoder_and_head

    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)
    split = decoder_and_head(model)
    if split is None:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1][keep]
    else:
        decoder, head = split
        hidden = decoder(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
        logits = head(hidden[:, :-1][keep])
    logps = torch.log_softmax(logits.float(), dim=-1)
    token = logps.gather(1, targets[keep].unsqueeze(1)).squeeze(1)
    out = torch.zeros(targets.shape[0], dtype=torch.float32, device=token.device)
    return out.index_add(0, rows[keep], token)


def shared_prefix(pair: EncodedPair) -> int:
    """How many first tokens the pair's two sides share (at least the prompt's)."""
    a, b = pair.chosen.input_ids, pair.rejected.input_ids
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k] and pair.chosen.labels[k] == pair.rejected.labels[k]:
        k += 1
    return k


def pack_pairs(pairs: list[EncodedPair], pad_token_id: int) -> dict[str, Any]:
    """One row per pair: the shared prefix once, then the chosen side's rest, then the
    rejected side's rest, with a 4-D attention mask that lets each rest see the prefix and
    itself (causally) but not the other rest, and position ids that start both rests where
    the prefix ends. So the row computes exactly what the two sides computed apart.

    Returns the tensors (`input_ids`, `position_ids`, `allowed`: bool (rows, 1, width,
    width)) and the selection: for each scored token its `row`, the `position` whose output
    predicts it, the `target` token id, and whether it counts for the chosen and/or the
    rejected side (`in_chosen`, `in_rejected`: a labelled token of the shared prefix counts
    for both)."""
    import torch

    rows_ids, rows_pos, rows_seg = [], [], []
    row, position, target, in_chosen, in_rejected = [], [], [], [], []
    for r, pair in enumerate(pairs):
        k = shared_prefix(pair)
        c, j = pair.chosen, pair.rejected
        ids = c.input_ids[:k] + c.input_ids[k:] + j.input_ids[k:]
        rows_ids.append(ids)
        rows_pos.append(list(range(len(c.input_ids))) + list(range(k, len(j.input_ids))))
        rows_seg.append([0] * k + [1] * (len(c.input_ids) - k) + [2] * (len(j.input_ids) - k))
        offset = len(c.input_ids) - k  # where the rejected side's rest starts, minus k
        for t in range(1, len(c.input_ids)):  # chosen tokens, predicted at t - 1
            if c.labels[t] != IGNORE_INDEX:
                row.append(r)
                position.append(t - 1)
                target.append(c.labels[t])
                shared = t < k
                in_chosen.append(True)
                in_rejected.append(shared)
        for t in range(1, len(j.input_ids)):  # rejected tokens past the shared ones
            if j.labels[t] != IGNORE_INDEX and t >= k:
                row.append(r)
                position.append(t - 1 if t - 1 < k else t - 1 + offset)
                target.append(j.labels[t])
                in_chosen.append(False)
                in_rejected.append(True)
    width = max(len(ids) for ids in rows_ids)
    n = len(pairs)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segment = torch.full((n, width), 3, dtype=torch.long)  # 3: padding
    for r, ids in enumerate(rows_ids):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        position_ids[r, :len(ids)] = torch.tensor(rows_pos[r])
        segment[r, :len(ids)] = torch.tensor(rows_seg[r])
    index = torch.arange(width)
    causal = index.unsqueeze(0) <= index.unsqueeze(1)  # [query, key]
    seg_q, seg_k = segment.unsqueeze(2), segment.unsqueeze(1)
    # a key is visible if earlier and in the prefix or the query's own part; padding queries
    # see the prefix only (their outputs are never read, but a row of nothing would be NaN)
    allowed = causal & ((seg_k == 0) | ((seg_k == seg_q) & (seg_q != 3)))
    return {"input_ids": input_ids, "position_ids": position_ids,
            "allowed": allowed.unsqueeze(1), "row": torch.tensor(row),
            "position": torch.tensor(position), "target": torch.tensor(target),
            "in_chosen": torch.tensor(in_chosen), "in_rejected": torch.tensor(in_rejected)}


def pair_batch(model, pairs: list[EncodedPair], pad_token_id: int, device: str
               ) -> dict[str, Any]:
    """The model's input for `pair_logps`, built once per batch (the reference and the tuned
    model read the same): the packed rows (`pack_pairs`, the mask made additive in the
    decoder's dtype), or for a model without a plain head (`decoder_and_head`) the two
    sides apart (`collate_pairs`)."""
    import torch

    from training.trainer import decoder_and_head

    split = decoder_and_head(model)
    if split is None:
        batch = collate_pairs(pairs, pad_token_id)
    else:
        batch = pack_pairs(pairs, pad_token_id)
        dtype = next(p.dtype for p in split[0].parameters() if p.is_floating_point())
        allowed = batch.pop("allowed")
        batch["mask"] = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(
            ~allowed, torch.finfo(dtype).min)
    return {k: v.to(device) for k, v in batch.items()}


def pair_logps(model, batch: dict[str, Any]):
    """The summed log-probabilities of a `pair_batch`'s chosen sides, then of its rejected
    sides (a float32 tensor of 2 x pairs). Packed, each pair's shared prefix runs once."""
    import torch

    from training.trainer import decoder_and_head

    if "labels" in batch:  # the two sides apart
        return sequence_logps(model, batch)
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=batch["mask"]).last_hidden_state
    logits = head(hidden[batch["row"], batch["position"]])
    logps = torch.log_softmax(logits.float(), dim=-1)
    token = logps.gather(1, batch["target"].unsqueeze(1)).squeeze(1)
    n, device = batch["input_ids"].shape[0], token.device
    chosen = torch.zeros(n, dtype=torch.float32, device=device).index_add(
        0, batch["row"], token * batch["in_chosen"])
    rejected = torch.zeros(n, dtype=torch.float32, device=device).index_add(
        0, batch["row"], token * batch["in_rejected"])
    return torch.cat([chosen, rejected])


def reference_logps(model, batch: dict[str, Any], indices: list[int],
                    cache: dict[int, tuple[float, float]]):
    """The reference's summed log-probabilities of a `pair_batch` (its pairs' indices in the
    run are `indices`), as `pair_logps` orders them, from `cache` (pair index -> (chosen,
    rejected)); computed with the adapter switched off for a batch with a pair not in it
    yet, which is then added."""
    import torch

    if not all(i in cache for i in indices):
        with torch.no_grad(), model.disable_adapter():
            logps = pair_logps(model, batch).tolist()
        cache.update((i, (logps[k], logps[len(indices) + k])) for k, i in enumerate(indices))
    return torch.tensor([cache[i][0] for i in indices] + [cache[i][1] for i in indices],
                        device=batch["input_ids"].device)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float,
             sft_weight: float = 0.0, chosen_tokens=None):
    """(mean loss, chosen rewards, rejected rewards) of the sigmoid DPO loss, plus
    `sft_weight` times the mean negative log-likelihood of the chosen sides' tokens
    (`chosen_tokens`: each chosen row's number of continuation tokens) when it is not 0."""
    import torch

    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards).mean()
    if sft_weight:
        loss = loss + sft_weight * -policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


# --- models ---------------------------------------------------------------------------------

def starting_model(config: TrainConfig, cache: Path, device: str, sft_adapter: str | None):
    """(model, tokenizer): the base model, with the SFT run's adapter merged in when the run
    starts from one."""
    from training.models import load_model

    model, tokenizer = load_model(config.base_model, cache, device=device)
    if sft_adapter:
        from peft import PeftModel

        if not (Path(sft_adapter) / "adapter_config.json").is_file():
            raise CurateError(f"the SFT run's adapter {sft_adapter} is gone; start the DPO "
                              "run from the base model or from another run")
        model = PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()
    return model, tokenizer


# --- training -------------------------------------------------------------------------------

def train_dpo(run_dir: Path, log: logging.Logger, config: TrainConfig,
              manifest) -> dict[str, Any]:
    """Train (or continue) the DPO run in `run_dir`; returns the final metrics."""
    import torch

    from training.trainer import optimize, runtime

    cache, device, bf16 = runtime(run_dir, config, manifest)
    model, tokenizer = starting_model(config, cache, device,
                                      (manifest.extra or {}).get("sft_adapter"))
    pairs_file = run_dir / PAIRS_FILE
    if not pairs_file.is_file():
        raise EmptyTrainingSet(f"{pairs_file} is missing: a DPO run trains on the snapshot's "
                               "preference pairs")
    pairs, report = encode_pairs(tokenizer, read_pairs(pairs_file, "train"),
                                 config.max_seq_length)
    if not pairs:
        raise EmptyTrainingSet(f"no preference pair to train on in {PAIRS_FILE} ({report}); "
                               "add train pairs (chosen and rejected answers), or raise "
                               "max_seq_length")
    log.info("DPO: beta %s, SFT weight %s", config.beta, config.sft_weight)

    reference: dict[int, tuple[float, float]] = {}

    def batch_loss(model, indices: list[int]):
        chunk = [pairs[i] for i in indices]
        n = len(chunk)
        batch = pair_batch(model, chunk, tokenizer.pad_token_id, device)
        ref = reference_logps(model, batch, indices, reference)
        policy = pair_logps(model, batch)
        chosen_tokens = torch.tensor([p.chosen.target_tokens for p in chunk], device=device)
        loss, chosen_r, rejected_r = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:],
                                              config.beta, config.sft_weight, chosen_tokens)
        margins = chosen_r - rejected_r
        tokens = sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in chunk)
        return loss, tokens, {
            "reward_accuracy": round(float((margins > 0).float().mean()), 4),
            "reward_margin": round(float(margins.mean()), 6),
            "rewards_chosen": round(float(chosen_r.mean()), 6),
            "rewards_rejected": round(float(rejected_r.mean()), 6)}

    return optimize(run_dir, log, config, model, lengths=[p.length for p in pairs],
                    report=report, device=device, bf16=bf16, batch_loss=batch_loss)


__all__ = [
    "PAIRS_FILE",
    "EncodedPair",
    "collate_pairs",
    "dpo_loss",
    "encode_pairs",
    "encode_side",
    "pack_pairs",
    "pair_batch",
    "pair_logps",
    "read_pairs",
    "reference_logps",
    "sequence_logps",
    "shared_prefix",
    "starting_model",
    "train_dpo",
    "write_pairs",
]

"""Curate's DPO loss (`training.dpo`) against TRL's `DPOTrainer`, on the same model and pairs.

Curate trains DPO in its own loop (a `transformers.Trainer` checkpoints with pickles, which
Curate's run folders refuse) and claims TRL's default loss: sigmoid, summed log-probabilities
of the continuation's tokens, reference = the LoRA adapter switched off. These tests put the
same preference pairs through both and compare what each computes, on the packaged SmolLM2
(fp32, CPU) with a LoRA adapter whose `lora_B` weights are set to seeded random values, so
that the policy differs from the reference and the rewards are not all zero.

How TRL is driven: `DPOTrainer(model=<base model>, peft_config=<LoraConfig as Curate's
trainer.lora_training builds it>)`, then its own collator, its own dataset preparation and
`trainer.compute_loss` on one batch, with no training step. The rewards are read from the
metrics `compute_loss` records (`rewards/chosen`, `rewards/rejected`, `logps/chosen`, ...).
The model goes in bare with `peft_config`, not as a ready `PeftModel`: given a `PeftModel`,
TRL 1.x copies its adapter into a second adapter named "ref" and uses that as the reference
(the starting adapter, not the bare model), which for a fresh adapter is the same thing but
not for the perturbed one here. With `peft_config` the reference is `disable_adapter()`, as
in Curate.

What is compared, and the one difference found:
- Tokens. TRL renders a conversational pair with the chat template, the prompt with the
  generation prompt, and scores every token of `prompt + chosen` after the prompt. SmolLM2's
  template ends each turn with `<|im_end|>` and a newline, so TRL's completion is the answer,
  `<|im_end|>` and `\\n`. Curate scores the answer and `<|im_end|>` only
  (`training.data.encode`: the span ends after the end-of-turn token; the newline is in its
  input but unlabelled). Everything else agrees: the prompt tokens (the template's default
  system prompt included where a pair has none) are identical and unscored by both, and
  assistant turns inside a multi-turn prompt are unscored by both.
  `test_conversational_pairs_differ_only_by_the_newline_after_end_of_turn` pins this down:
  TRL's completion is Curate's labelled tokens plus one newline token per side, and Curate's
  `sequence_logps` with that one token labelled as well reproduces TRL's loss.
- The loss itself. `test_loss_and_rewards_match_trl` gives TRL the same pairs in its standard
  (text) form, the prompt as the template renders it up to the assistant header and each
  answer as the template renders the turn through `<|im_end|>`. TRL then tokenizes exactly
  Curate's tokens and scores exactly Curate's labelled ones (asserted), and the loss, the
  rewards, their margin and accuracy and the policy log-probabilities must agree, for the
  batch and for each pair. Each mistake the test is for (another beta, a flipped sign, the
  prompt summed too, `<|im_end|>` left out) is asserted to miss TRL by over 10x the
  tolerance, so the comparison cannot pass by being loose. Note that summing over the prompt
  as well leaves the DPO loss itself unchanged (the prompt's log-ratio is the same on both
  sides of a pair and cancels): the per-pair rewards and log-probabilities catch that one.

Tolerance: fp32 on CPU. TRL computes log-probabilities with its fused, chunked LM head;
Curate with `log_softmax` over the head's logits at the labelled positions; the two differ
in rounding only. The loss and log-probabilities are compared at relative 1e-4 (seen: the
loss equal to the last bit, summed log-probabilities within ~1e-5 relative). Rewards are
beta times a difference of two nearly equal sums (policy minus reference), often near 0, so
they are compared at absolute 1e-5 (seen: ~2e-7) rather than relatively. Each of the caught
mistakes misses by 1e-3 or more.
"""

from __future__ import annotations

import math

import pytest

from curation.preference import PreferencePair
from training.config import TrainConfig
from training.data import IGNORE_INDEX
from training.dpo import collate_pairs, dpo_loss, encode_pairs, sequence_logps

BETA = 0.25  # not TRL's default 0.1, so a beta fixed anywhere in Curate's loss shows
SEED = 1234
MAX_LEN = 256
REL = 1e-4
REWARD_ABS = 1e-5

PAIRS = [
    PreferencePair(  # no system turn: the template adds its default one, in the prompt
        example_id=1,
        prompt=({"role": "user", "content": "What is 7 plus 5?"},),
        chosen=({"role": "assistant", "content": "7 plus 5 is 12."},),
        rejected=({"role": "assistant", "content": "7 plus 5 is 13, I think."},)),
    PreferencePair(  # an explicit system turn, and sides of very different lengths
        example_id=2,
        prompt=({"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Capital of France?"}),
        chosen=({"role": "assistant", "content": "Paris."},),
        rejected=({"role": "assistant",
                   "content": "The capital of France is Lyon, in the south east."},)),
    PreferencePair(  # a multi-turn prompt: its assistant turn is context, not scored
        example_id=3,
        prompt=({"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one?"}),
        chosen=({"role": "assistant", "content": "Green."},),
        rejected=({"role": "assistant", "content": "Blue again."},)),
]


# --- the two sides --------------------------------------------------------------------------

def _lora_config(config: TrainConfig):
    """The LoraConfig `training.trainer.lora_training` builds for `config`."""
    from peft import LoraConfig

    return LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules_list(), task_type="CAUSAL_LM")


def _perturb_adapter(model) -> None:
    """Seeded random `lora_B` weights (PEFT starts them at zero), so policy != reference."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def _trainer(model_cache, tmp_path, form, **dpo_args):
    """TRL's DPOTrainer on a fresh packaged SmolLM2 with Curate's LoRA setup (perturbed),
    on PAIRS in `form` (a function of the tokenizer and a pair)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from training.models import load_model

    torch.set_num_threads(1)
    model, tokenizer = load_model(None, model_cache, device="cpu")
    rows = [form(tokenizer, pair) for pair in PAIRS]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False,
                     per_device_train_batch_size=len(rows), beta=BETA, max_length=MAX_LEN,
                     seed=SEED, **dpo_args)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer,
                         peft_config=_lora_config(TrainConfig(method="dpo", beta=BETA)))
    _perturb_adapter(trainer.model)
    return trainer, tokenizer


def _conversational(tokenizer, pair: PreferencePair) -> dict:
    return {"prompt": [dict(m) for m in pair.prompt], "chosen": [dict(m) for m in pair.chosen],
            "rejected": [dict(m) for m in pair.rejected]}


def _text_form(tokenizer, pair: PreferencePair) -> dict:
    """The pair in TRL's standard (text) form: the prompt rendered up to the assistant
    header, each answer as the template renders its turn, through `<|im_end|>`."""
    prompt = [dict(m) for m in pair.prompt]
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def turn(answer):
        full = tokenizer.apply_chat_template(prompt + [dict(m) for m in answer], tokenize=False)
        assert full.startswith(head)
        end = full.rindex(tokenizer.eos_token) + len(tokenizer.eos_token)
        return full[len(head):end]

    return {"prompt": head, "chosen": turn(pair.chosen), "rejected": turn(pair.rejected)}


def _trl_batch(trainer, indices: list[int]) -> dict:
    """TRL's collated batch of the prepared dataset's rows `indices`, in that order (its
    train dataloader shuffles; the full-batch checks use the dataloader itself)."""
    rows = [trainer.train_dataset[i] for i in indices]
    return trainer._prepare_inputs(trainer.data_collator(rows))


def _trl_loss(trainer, batch) -> tuple[float, dict[str, float]]:
    """TRL's loss on `batch` and the metrics it recorded for it."""
    import torch

    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    mode = "train" if trainer.model.training else "eval"
    metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()
               if k.startswith(("rewards/", "logps/"))}
    return loss.item(), metrics


def _curate_logps(model, batch):
    """(policy, reference) summed log-probabilities per row, each side on its own row
    (`sequence_logps`); `train_dpo` runs a pair's shared prefix once (`pair_logps`), which
    tests/test_dpo.py holds equal to this."""
    import torch

    with torch.no_grad():
        with model.disable_adapter():
            ref = sequence_logps(model, batch)
        policy = sequence_logps(model, batch)
    return policy, ref


def _curate(tokenizer, pairs: list[PreferencePair]) -> dict:
    """Curate's batch of `pairs`: n chosen rows, then n rejected rows."""
    encoded, report = encode_pairs(tokenizer, pairs, MAX_LEN)
    assert report["pairs"] == len(pairs) and not report["skipped"] and not report["truncated"]
    return collate_pairs(encoded, tokenizer.pad_token_id)


def _newline(tokenizer) -> int:
    [newline] = tokenizer.encode("\n", add_special_tokens=False)
    return newline


def _scored(input_ids, mask) -> list[list[int]]:
    """Per row, the ids at the positions `mask` marks (padding and unscored left out)."""
    return [[int(t) for t, m in zip(ids, row) if m] for ids, row in zip(input_ids, mask)]


# --- the comparison -------------------------------------------------------------------------

def _curate_result(policy, ref, beta: float) -> dict[str, float]:
    """Curate's loss, rewards and log-probabilities of PAIRS, for the whole batch and pair
    by pair, under the names of TRL's metrics (`_trl_result`)."""
    n = len(PAIRS)
    loss, chosen_r, rejected_r = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], beta)
    out = {"loss": loss.item(), "rewards/chosen": chosen_r.mean().item(),
           "rewards/rejected": rejected_r.mean().item(),
           "rewards/margins": (chosen_r - rejected_r).mean().item(),
           "rewards/accuracies": (chosen_r > rejected_r).float().mean().item(),
           "logps/chosen": policy[:n].mean().item(), "logps/rejected": policy[n:].mean().item()}
    for i in range(n):
        one = dpo_loss(policy[i:i + 1], policy[n + i:n + i + 1], ref[i:i + 1],
                       ref[n + i:n + i + 1], beta)[0]
        out |= {f"loss {i}": one.item(), f"rewards/chosen {i}": chosen_r[i].item(),
                f"rewards/rejected {i}": rejected_r[i].item(),
                f"logps/chosen {i}": policy[i].item(), f"logps/rejected {i}": policy[n + i].item()}
    return out


def _trl_result(trainer, pair_by_pair: bool = True) -> dict[str, float]:
    """TRL's loss and metrics on PAIRS: the whole batch through its own train dataloader
    (which shuffles; the batch's mean loss and metrics do not depend on the order), then
    each pair as a batch of one."""
    [batch] = list(trainer.get_train_dataloader())
    loss, metrics = _trl_loss(trainer, trainer._prepare_inputs(batch))
    out = {"loss": loss, **metrics}
    for i in range(len(PAIRS) if pair_by_pair else 0):
        loss, metrics = _trl_loss(trainer, _trl_batch(trainer, [i]))
        out |= {f"loss {i}": loss, **{f"{k} {i}": metrics[k] for k in (
            "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected")}}
    return out


def _differences(ours: dict[str, float], theirs: dict[str, float], factor: float = 1.0
                 ) -> dict[str, tuple[float, float]]:
    """The quantities of `theirs` on which `ours` differs beyond the tolerance (x factor)."""
    out = {}
    for key, expected in theirs.items():
        value = ours[key]
        if key.startswith("rewards/"):
            close = value == pytest.approx(expected, abs=REWARD_ABS * factor)
        else:
            close = value == pytest.approx(expected, rel=REL * factor)
        if not close:
            out[key] = (value, expected)
    return out


# --- tests ----------------------------------------------------------------------------------

def test_loss_and_rewards_match_trl(model_cache, tmp_path):
    """Same tokens in, same tokens scored; same loss, rewards and log-probabilities for the
    batch and for each pair; and each mistake the test is for would be caught."""
    import torch

    trainer, tokenizer = _trainer(model_cache, tmp_path, _text_form)
    model = trainer.model
    batch = _curate(tokenizer, PAIRS)
    n = len(PAIRS)

    # the same tokens in, the same tokens scored (TRL's rows: n chosen, then n rejected);
    # Curate's rows end with the template's newline after <|im_end|>, unscored
    trl = _trl_batch(trainer, list(range(n)))
    curate_in = _scored(batch["input_ids"], batch["attention_mask"])
    assert all(ids[-1] == _newline(tokenizer) for ids in curate_in)
    assert _scored(trl["input_ids"], trl["attention_mask"]) == [ids[:-1] for ids in curate_in]
    assert _scored(trl["input_ids"], trl["completion_mask"]) == \
        _scored(batch["labels"], batch["labels"] != IGNORE_INDEX)

    theirs = _trl_result(trainer)
    policy, ref = _curate_logps(model, batch)
    ours = _curate_result(policy, ref, BETA)
    assert _differences(ours, theirs) == {}

    # the comparison has teeth: the adapter moved the policy away from the reference, and
    # each mistake the test is there to catch differs from TRL by over 10x the tolerance
    rewards = torch.tensor([ours[f"rewards/{side} {i}"] for side in ("chosen", "rejected")
                            for i in range(n)])
    assert rewards.abs().max() > 1000 * REWARD_ABS
    assert abs(ours["loss"] - math.log(2)) > 1e-3
    wrong = {"beta 0.1": _curate_result(policy, ref, 0.1),
             "sign flipped": _curate_result(torch.cat([policy[n:], policy[:n]]),
                                            torch.cat([ref[n:], ref[:n]]), BETA)}
    for name, change in {"prompt summed too": "prompt", "<|im_end|> left out": "eot"}.items():
        wrong[name] = _curate_result(*_curate_logps(model, _relabel(batch, tokenizer, change)),
                                     BETA)
    for name, result in wrong.items():
        assert _differences(result, theirs, factor=10), name


def _relabel(batch, tokenizer, change: str) -> dict:
    """`batch` with its labels changed: 'prompt' labels every real token before the
    continuation too, 'eot' drops the label of the end-of-turn token."""
    labels = batch["labels"].clone()
    eot = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    for row in range(labels.shape[0]):
        scored = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        if change == "prompt":
            labels[row, 1:scored[0]] = batch["input_ids"][row, 1:scored[0]]
        else:
            ends = scored[batch["input_ids"][row, scored] == eot]
            assert len(ends) == 1
            labels[row, ends] = IGNORE_INDEX
    return {**batch, "labels": labels}


def test_conversational_pairs_differ_only_by_the_newline_after_end_of_turn(model_cache,
                                                                           tmp_path):
    """TRL on conversational pairs also scores the template's newline after `<|im_end|>`;
    that one token per side is the whole difference (see the module docstring)."""
    trainer, tokenizer = _trainer(model_cache, tmp_path, _conversational)
    model = trainer.model
    batch = _curate(tokenizer, PAIRS)
    n = len(PAIRS)
    newline = _newline(tokenizer)
    trl = _trl_batch(trainer, list(range(n)))

    # same prompt and answer tokens; TRL's completion has one more token, the newline
    assert _scored(trl["input_ids"], trl["attention_mask"]) == \
        _scored(batch["input_ids"], batch["attention_mask"])
    curate_scored = _scored(batch["labels"], batch["labels"] != IGNORE_INDEX)
    trl_scored = _scored(trl["input_ids"], trl["completion_mask"])
    assert trl_scored == [ids + [newline] for ids in curate_scored]
    assert all(ids[-1] == tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
               for ids in curate_scored)

    # Curate's own log-probabilities with that newline labelled too give TRL's results
    theirs = _trl_result(trainer, pair_by_pair=False)
    labels = batch["labels"].clone()
    for row in range(labels.shape[0]):
        last = int((labels[row] != IGNORE_INDEX).nonzero().max())
        assert batch["input_ids"][row, last + 1] == newline
        labels[row, last + 1] = newline
    with_newline = _curate_result(*_curate_logps(model, {**batch, "labels": labels}), BETA)
    assert _differences(with_newline, theirs) == {}

    # without it (as Curate trains) the results differ: by the newline's log-ratio, small
    # (the newline is near-certain after <|im_end|> under both models) but not zero
    as_trained = _curate_result(*_curate_logps(model, batch), BETA)
    assert _differences(as_trained, theirs)
    print(f"\nconversational pairs: TRL's loss {theirs['loss']:.6f}, Curate's "
          f"{as_trained['loss']:.6f}; chosen rewards {theirs['rewards/chosen']:.6f} vs "
          f"{as_trained['rewards/chosen']:.6f}, rejected {theirs['rewards/rejected']:.6f} vs "
          f"{as_trained['rewards/rejected']:.6f}")


def test_sft_term_matches_trl(model_cache, tmp_path):
    """`dpo_loss(..., sft_weight, chosen_tokens)` against TRL's
    `loss_type=["sigmoid", "sft"], loss_weights=[1, w]` (RPO): TRL's "sft" term is minus the
    mean log-probability of all the batch's chosen completion tokens (one mean over the
    tokens, not a mean of per-row means), policy only."""
    import inspect

    if "sft_weight" not in inspect.signature(dpo_loss).parameters:
        pytest.skip("training.dpo.dpo_loss has no sft_weight yet")
    weight = 0.7
    trainer, tokenizer = _trainer(model_cache, tmp_path, _text_form,
                                  loss_type=["sigmoid", "sft"], loss_weights=[1.0, weight])
    model = trainer.model
    batch = _curate(tokenizer, PAIRS)
    n = len(PAIRS)
    [loader_batch] = list(trainer.get_train_dataloader())
    trl_loss, _ = _trl_loss(trainer, trainer._prepare_inputs(loader_batch))

    policy, ref = _curate_logps(model, batch)
    chosen_tokens = (batch["labels"][:n, 1:] != IGNORE_INDEX).sum(1)
    loss = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], BETA, sft_weight=weight,
                    chosen_tokens=chosen_tokens)[0].item()
    assert loss == pytest.approx(trl_loss, rel=REL)
    # the term is there, and weighs what it should: without it, or with a per-row mean,
    # the loss is off by far more than the tolerance
    plain = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], BETA)[0].item()
    assert plain != pytest.approx(trl_loss, rel=10 * REL)
    per_row_mean = plain + weight * -(policy[:n] / chosen_tokens).mean().item()
    assert per_row_mean != pytest.approx(trl_loss, rel=10 * REL)

"""One generation loop for evaluation (greedy, shared prefix cached) and drafts (sampled), run
on the real packaged SmolLM2 model with a few tokens per answer."""

from __future__ import annotations

import pytest

from training.generate import Sampling, generate, shared_prefix_length

SYSTEM = {"role": "system", "content": "You sort support tickets. Answer with one word: the "
                                       "ticket's category (billing, access or bugs)."}
PROMPTS = [[SYSTEM, {"role": "user", "content": text}] for text in (
    "I was charged twice this month", "I cannot log in after the update",
    "The export button crashes the app", "Where is my invoice?")]


@pytest.fixture(scope="module")
def model(model_cache):
    import torch

    from training.models import cached_default_model, load_model

    cached_default_model(model_cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(None, model_cache, device="cpu")
    torch.set_num_threads(threads)


def _reference(model, tokenizer, prompts, max_new_tokens):
    """transformers' own greedy generate, one prompt at a time (no padding, no cache tricks)."""
    import torch

    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return answers


def test_greedy_answers_equal_transformers_generate(model):
    model, tokenizer = model
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert shared_prefix_length(ids) >= 8  # the system prompt is cached once, then copied
    seen = []
    ours = generate(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=3,
                    on_batch=seen.append)
    assert seen == [3, 1]
    assert ours == _reference(model, tokenizer, PROMPTS, 5)


def test_sampling_is_repeatable_and_a_tiny_nucleus_is_greedy(model):
    model, tokenizer = model
    kwargs = {"max_new_tokens": 5, "batch_size": 4}
    first = generate(model, tokenizer, PROMPTS, sampling=Sampling(1.0, 1.0, seed=3), **kwargs)
    again = generate(model, tokenizer, PROMPTS, sampling=Sampling(1.0, 1.0, seed=3), **kwargs)
    assert first == again and all(isinstance(a, str) for a in first)
    greedy = generate(model, tokenizer, PROMPTS, **kwargs)
    nucleus_of_one = generate(model, tokenizer, PROMPTS,
                              sampling=Sampling(1.0, 1e-9, seed=5), **kwargs)
    assert nucleus_of_one == greedy
    others = {tuple(generate(model, tokenizer, PROMPTS, sampling=Sampling(1.5, 1.0, seed=s),
                             **kwargs)) for s in range(3)}
    assert len(others | {tuple(greedy)}) > 1, "sampling at a high temperature never varied"

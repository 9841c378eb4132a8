"""Chat-template special tokens inside message text: a validation finding.

A turn whose text holds `<|im_end|>` or `<|im_start|>` is rendered by the chat template with
that token as it is, so the tokenizer reads an end of turn (and a new fake turn) in the middle
of the text: the model is trained on a conversation nobody wrote. OpenAI refuses such files.

Design decisions:
- The tokens: those of the common chat templates (ChatML `<|im_start|>`/`<|im_end|>`, GPT-2
  and SmolLM `<|endoftext|>`, Llama 2 `<s>`/`</s>`/`[INST]`, Llama 3 `<|begin_of_text|>`,
  `<|start_header_id|>`, `<|eot_id|>`..., Gemma `<start_of_turn>`) plus every special token of
  the packaged base model, SmolLM2 (`<repo_name>`, `<file_sep>`, `<jupyter_code>`...). The
  list is fixed here rather than read from a tokenizer, so the check needs no model and runs
  in the data core; a test holds it to the packaged tokenizer's own special tokens.
- Every text is searched: string contents, text parts, tool-call arguments and the
  conversation's tool definitions; each finding names the token and the turn
  (`messages[2] (assistant)`), so the SME knows what to edit.
- Score: 0 when a token is found, 1 otherwise. It is about what is trained on, and also a
  prompt waiting for its answer gets it: the token is there before anyone answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from curation.checks._contract import (CheckResult, ExampleTable, Finding, PairSet, Progress,
                                       register)
from curation.messages import CONVERSATION_KEYS, message_text, tool_calls

CHAT_TEMPLATE_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_sep|>",
    "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    "<start_of_turn>", "<end_of_turn>",
)
# The special tokens of the packaged base model (SmolLM2-135M-Instruct's tokenizer.json).
BASE_MODEL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
    "<jupyter_script>", "<empty_output>",
)
SPECIAL_TOKENS = tuple(dict.fromkeys(CHAT_TEMPLATE_TOKENS + BASE_MODEL_TOKENS))
_PATTERN = re.compile("|".join(re.escape(t) for t in
                               sorted(SPECIAL_TOKENS, key=len, reverse=True)))


def special_tokens_in(messages: list[dict]) -> list[tuple[int, str, str]]:
    """(turn index, role, token) for every distinct special token in each turn's texts."""
    found = []
    for i, m in enumerate(messages):
        texts = [message_text(m)] + [f"{name} {args}" for _, name, args in tool_calls(m)]
        texts += [orjson.dumps(m[k]).decode() for k in CONVERSATION_KEYS if k in m]
        tokens = dict.fromkeys(t for text in texts if "<" in text or "[" in text
                               for t in _PATTERN.findall(text))
        found += [(i, m.get("role", "?"), t) for t in tokens]
    return found


@dataclass
class SpecialTokenCheck:
    name: str = "special_tokens"
    title: str = "Chat-template tokens in the text"
    description: str = ("Turns whose text contains a chat template's special token, such as "
                        "`<|im_end|>`, `<|im_start|>`, `</s>` or `<|endoftext|>` (or another "
                        "special token of the base model). In training the template takes it for a "
                        "real end of turn, so the model learns a conversation nobody wrote; "
                        "OpenAI refuses such files. Remove or rewrite the token.")

    def run(self, table: ExampleTable, progress: Progress | None = None,
            ignore_pairs: PairSet = frozenset()) -> CheckResult:
        findings, flagged = [], 0
        for i, example_id in enumerate(table.ids):
            found = special_tokens_in(table.messages[i])
            if not found:
                findings.append(Finding(example_id, 1.0, False, "no special tokens"))
                continue
            flagged += 1
            reason = "; ".join(f"{token} in messages[{turn}] ({role})"
                               for turn, role, token in found)
            findings.append(Finding(example_id, 0.0, True, reason, {
                "tokens": sorted({t for _, _, t in found}),
                "turns": sorted({turn for turn, _, _ in found})}))
        return CheckResult(self.name, findings, {"examples": len(table), "flagged": flagged})


SPECIAL_TOKENS_CHECK = register(SpecialTokenCheck())

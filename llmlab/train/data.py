"""From dataset files to training rows: formatting, response-only labels, EOS, truncation, packing, collation.

Each example becomes `input_ids` and `labels` (IGNORE where no loss is taken). Loss is on the response
only for `instruction` and `chat`; every example ends with EOS *with* a label, because a model that never
learned to emit EOS never stops. With packing, examples are bin-packed into rows of at most
`sequence_len` tokens; `position_ids` restart at 0 for every example, which transformers turns into a
block-diagonal causal mask (examples in one row do not attend to each other).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from llmlab.config import ConfigError
from llmlab.data.files import BadRow, read_rows
from llmlab.train.schema import PREFERENCE_FORMATS, DatasetSpec

T = TypeVar("T")

IGNORE = -100

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

Example = dict[str, list[int]]


@dataclass
class EncodedData:
    examples: list[Example]
    dropped_too_long: int = 0
    truncated: int = 0
    longest: int = 0
    per_file: dict[str, int] = field(default_factory=dict)


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) for every example of a dataset file; a malformed row is a ConfigError."""
    for where, record in read_rows(path):
        if isinstance(record, BadRow):
            raise ConfigError(f"{where}: {record.reason}")
        yield where, record


def _field(
    record: dict[str, Any], key: str, where: str, fmt: str, optional: bool = False, may_be_empty: bool = False
) -> str:
    """A string field. `optional`: a missing one (CSV and Parquet give None for it) is "". `may_be_empty`:
    "" is valid data rather than a format error (an empty answer, which `llmlab data check` reports)."""
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or (not value and not (optional or may_be_empty)):
        kind = "a string" if may_be_empty else "a non-empty string"
        raise ConfigError(f"{where}: format {fmt!r} needs {kind} {key!r} (got keys {sorted(record)})")
    return value


def encode_text(tokenizer, text: str) -> Example:
    ids = [*tokenizer(text, add_special_tokens=True)["input_ids"], tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": [IGNORE, *ids[1:]]}


def instruction_prompt(instruction: str, input_text: str = "") -> str:
    template = ALPACA_PROMPT_WITH_INPUT if input_text else ALPACA_PROMPT
    return template.format(instruction=instruction, input=input_text)


def encode_instruction(tokenizer, instruction: str, input_text: str, output: str) -> Example:
    prompt = tokenizer(instruction_prompt(instruction, input_text), add_special_tokens=True)
    response = tokenizer(output, add_special_tokens=False)
    prompt_ids = prompt["input_ids"]
    response_ids = [*response["input_ids"], tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def _assistant_spans(tokenizer, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in `text`, found by rendering growing prefixes of the chat."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(before) and text.startswith(through)):
            raise ConfigError(
                "the tokenizer's chat template renders a conversation differently from its prefixes, so the "
                "assistant turns cannot be located for response-only loss; use format 'instruction' or 'text'"
            )
        spans.append((len(before), len(through.rstrip())))
    return spans


def encode_chat(tokenizer, messages: list[dict[str, str]]) -> Example:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = _assistant_spans(tokenizer, messages, text)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE
        for token, (begin, _) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    if not text.rstrip().endswith(tokenizer.eos_token):
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    labels[0] = IGNORE
    return {"input_ids": ids, "labels": labels}


def encode_prompt(tokenizer, fmt: str, record: dict[str, Any], where: str) -> tuple[list[int], str | None]:
    """A record's prompt tokenized as training tokenized it, and its expected answer when it has one.

    `record` is a line of the format (`output`, a final assistant turn or `chosen` is the expected answer),
    or `{"prompt": TEXT}`: the instruction, the user's message, or the text itself. The preference formats
    render their prompt as `instruction` (preference) and `chat` (preference_chat) do.
    """
    if fmt in PREFERENCE_FORMATS:  # rendered as training rendered the prompt; `chosen` is the answer
        record = _preference_as_example(record, fmt, where)
        fmt = "instruction" if fmt == "preference" else "chat"
    if "prompt" in record:
        text = _field(record, "prompt", where, fmt)
        record = {"instruction": text, "text": text, "messages": [{"role": "user", "content": text}]}
    if fmt == "text":
        return tokenizer(_field(record, "text", where, fmt), add_special_tokens=True)["input_ids"], None
    if fmt == "instruction":
        prompt = instruction_prompt(
            _field(record, "instruction", where, fmt), _field(record, "input", where, fmt, optional=True)
        )
        return tokenizer(prompt, add_special_tokens=True)["input_ids"], record.get("output")
    messages = list(record.get("messages") or [])
    expected = messages.pop()["content"] if messages and messages[-1].get("role") == "assistant" else None
    if not messages:
        raise ConfigError(f"{where}: format 'chat' needs at least one message before the answer")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"], expected


def prompt_and_answer(example: Example) -> tuple[list[int], list[int]]:
    """Split an encoded instruction/chat example at its first answer: the tokens before the first labelled
    token (what the model is asked) and that labelled run (what it should answer, EOS included)."""
    labels = example["labels"]
    start = next(i for i, label in enumerate(labels) if i > 0 and label != IGNORE)
    end = next((i for i in range(start, len(labels)) if labels[i] == IGNORE), len(labels))
    return example["input_ids"][:start], example["input_ids"][start:end]


def record_fields(record: dict[str, Any], fmt: str, where: str) -> Any:
    """The fields of one example, validated as `fmt` needs them; ConfigError naming `where` otherwise.

    text: the text; instruction: (instruction, input, output); chat: the messages. An empty or
    whitespace-only answer is valid data here (it trains EOS only); `llmlab data check` reports it.
    """
    if fmt == "text":
        return _field(record, "text", where, fmt, may_be_empty=True)
    if fmt == "instruction":
        return (
            _field(record, "instruction", where, fmt),
            _field(record, "input", where, fmt, optional=True),
            _field(record, "output", where, fmt, may_be_empty=True),
        )
    messages = record.get("messages")
    valid = (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages)
    )
    if not valid:
        raise ConfigError(f"{where}: format 'chat' needs 'messages': a list of {{role, content}} objects")
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError(f"{where}: a chat example needs at least one assistant message to learn from")
    return messages


def _encode_record(tokenizer, record: dict[str, Any], fmt: str, where: str) -> Example:
    fields = record_fields(record, fmt, where)
    if fmt == "text":
        return encode_text(tokenizer, fields)
    if fmt == "instruction":
        return encode_instruction(tokenizer, *fields)
    return encode_chat(tokenizer, fields)


@dataclass(frozen=True)
class PreferencePair:
    """One preference row: the prompt (a string, or chat messages) and the two answers as strings."""

    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str


def _messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value)
    )


def _answer(record: dict[str, Any], key: str, where: str, fmt: str) -> str:
    """`chosen` / `rejected`: a string; in preference_chat also one assistant turn (a list of one message)."""
    value = record.get(key)
    if fmt == "preference_chat" and _messages(value):
        if len(value) != 1 or value[0]["role"] != "assistant":
            raise ConfigError(f"{where}: format {fmt!r} needs {key!r} to be one assistant turn")
        value = value[0]["content"]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: format {fmt!r} needs a string {key!r} (got keys {sorted(record)})")
    return value


def preference_fields(record: dict[str, Any], fmt: str, where: str) -> PreferencePair:
    """A preference or preference_chat row, validated; ConfigError naming `where` otherwise."""
    if fmt == "preference":
        prompt: str | list[dict[str, str]] = _field(record, "prompt", where, fmt)
    else:
        prompt = record.get("prompt")
        if isinstance(prompt, str) and prompt:
            prompt = [{"role": "user", "content": prompt}]
        if not _messages(prompt) or prompt[-1]["role"] == "assistant":
            raise ConfigError(
                f"{where}: format {fmt!r} needs 'prompt': a list of {{role, content}} messages ending "
                "before the answer"
            )
    pair = PreferencePair(
        prompt, _answer(record, "chosen", where, fmt), _answer(record, "rejected", where, fmt)
    )
    if pair.chosen.strip() == pair.rejected.strip():
        raise ConfigError(f"{where}: 'chosen' and 'rejected' are the same answer; the pair teaches nothing")
    return pair


def _preference_as_example(record: dict[str, Any], fmt: str, where: str) -> dict[str, Any]:
    """A preference row as the instruction / chat record of its prompt, `chosen` as the answer."""
    if set(record) == {"prompt"} and isinstance(record["prompt"], str):
        return record  # a bare prompt, as generate's --prompt gives
    pair = preference_fields(record, fmt, where)
    if fmt == "preference":
        return {"instruction": pair.prompt, "output": pair.chosen}
    return {"messages": [*pair.prompt, {"role": "assistant", "content": pair.chosen}]}


def encode_preference(tokenizer, fmt: str, pair: PreferencePair) -> tuple[Example, Example]:
    """(prompt + chosen, prompt + rejected) as training examples of the matching SFT format: the tokens
    DPO scores, with labels on the answer (EOS included) only."""
    if fmt == "preference":
        assert isinstance(pair.prompt, str)
        return (
            encode_instruction(tokenizer, pair.prompt, "", pair.chosen),
            encode_instruction(tokenizer, pair.prompt, "", pair.rejected),
        )
    assert isinstance(pair.prompt, list)
    return tuple(  # type: ignore[return-value]
        encode_chat(tokenizer, [*pair.prompt, {"role": "assistant", "content": answer}])
        for answer in (pair.chosen, pair.rejected)
    )


def trl_preference_row(fmt: str, pair: PreferencePair) -> dict[str, Any]:
    """The row TRL's DPOTrainer tokenizes: the prompt rendered as `instruction` renders it (preference), or
    the conversational form (preference_chat, rendered with the chat template by TRL)."""
    if fmt == "preference":
        assert isinstance(pair.prompt, str)
        return {"prompt": instruction_prompt(pair.prompt), "chosen": pair.chosen, "rejected": pair.rejected}
    return {
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
    }


@dataclass
class PreferenceData:
    rows: list[dict[str, Any]]  # TRL's rows
    lengths: list[int]  # tokens of prompt + chosen plus prompt + rejected, per row
    dropped_too_long: int = 0
    truncated: int = 0


def preference_datasets(
    tokenizer, specs: Sequence[DatasetSpec], sequence_len: int, too_long: str = "drop"
) -> PreferenceData:
    """Every preference pair of every file; a pair whose longer side exceeds `sequence_len` is dropped, or
    with `too_long: truncate` kept for TRL to cut to `sequence_len` (its `max_length`, keeping the start)."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("base_model: the tokenizer has no EOS token; a fine-tuned model could never stop")
    if any(spec.format == "preference_chat" for spec in specs) and not tokenizer.chat_template:
        raise ConfigError(
            "datasets: format 'preference_chat' needs a tokenizer with a chat template; this one has none"
        )
    data = PreferenceData(rows=[], lengths=[])
    for spec in specs:
        for where, record in read_records(spec.path):
            pair = preference_fields(record, spec.format, where)
            chosen, rejected = encode_preference(tokenizer, spec.format, pair)
            longest = max(len(chosen["input_ids"]), len(rejected["input_ids"]))
            if longest > sequence_len:
                prompt_len = next(i for i, label in enumerate(chosen["labels"]) if i and label != IGNORE)
                if too_long == "drop" or prompt_len >= sequence_len:
                    data.dropped_too_long += 1
                    continue
                data.truncated += 1
            data.rows.append(trl_preference_row(spec.format, pair))
            data.lengths.append(
                min(len(chosen["input_ids"]), sequence_len) + min(len(rejected["input_ids"]), sequence_len)
            )
    if not data.rows:
        raise ConfigError(
            f"datasets: no preference pair fits sequence_len={sequence_len} ({data.dropped_too_long} dropped)"
        )
    return data


def truncate(example: Example, sequence_len: int) -> Example | None:
    """The first `sequence_len` tokens, or None when no token with a label is left (nothing to learn)."""
    cut = {key: value[:sequence_len] for key, value in example.items()}
    return cut if any(label != IGNORE for label in cut["labels"]) else None


def encode_datasets(
    tokenizer, specs: Sequence[DatasetSpec], sequence_len: int, too_long: str = "drop"
) -> EncodedData:
    """Tokenize every example of every file; examples longer than `sequence_len` are dropped or truncated.

    Either way they are counted: `dropped_too_long` (with `truncate`, those whose answer lay wholly beyond
    `sequence_len`) and `truncated`.
    """
    if tokenizer.eos_token_id is None:
        raise ConfigError("base_model: the tokenizer has no EOS token; a fine-tuned model could never stop")
    if any(spec.format == "chat" for spec in specs) and not tokenizer.chat_template:
        raise ConfigError("datasets: format 'chat' needs a tokenizer with a chat template; this one has none")
    data = EncodedData(examples=[])
    for spec in specs:
        kept = 0
        for where, record in read_records(spec.path):
            example: Example | None = _encode_record(tokenizer, record, spec.format, where)
            data.longest = max(data.longest, len(example["input_ids"]))
            if len(example["input_ids"]) > sequence_len:
                example = truncate(example, sequence_len) if too_long == "truncate" else None
                if example is None:
                    data.dropped_too_long += 1
                    continue
                data.truncated += 1
            data.examples.append(example)
            kept += 1
        data.per_file[str(spec.path)] = kept
    if not data.examples:
        raise ConfigError(
            f"datasets: no example fits sequence_len={sequence_len} (longest: {data.longest} tokens, "
            f"{data.dropped_too_long} dropped)"
        )
    return data


def split_eval(examples: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Hold out `fraction` of the examples (at least one when fraction > 0), chosen with `seed`.

    Generic over the items, so that `llmlab data check` splits its row indices exactly as training does.
    """
    if fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * fraction))
    if n_eval >= len(examples):
        raise ConfigError(f"eval_split: {fraction} leaves no training examples out of {len(examples)}")
    held = set(order[:n_eval])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [examples[i] for i in sorted(held)]


def pack_lengths(lengths: Sequence[int], sequence_len: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of items of these lengths into bins of <= sequence_len: the indices."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin index), sorted
    for i in order:
        size = lengths[i]
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, b = free.pop(slot)
        else:
            room, b = sequence_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - size > 0:
            bisect.insort(free, (room - size, b))
    return bins


def pack(examples: list[Example], sequence_len: int) -> list[Example]:
    """Best-fit-decreasing bin packing into rows of <= sequence_len tokens, with per-example position_ids."""
    rows = []
    for members in pack_lengths([len(example["input_ids"]) for example in examples], sequence_len):
        row: Example = {"input_ids": [], "labels": [], "position_ids": []}
        for i in members:
            row["input_ids"] += examples[i]["input_ids"]
            row["labels"] += examples[i]["labels"]
            row["position_ids"] += list(range(len(examples[i]["input_ids"])))
        rows.append(row)
    return rows


class PackedCollator:
    """Pads packed rows to the longest in the batch. No attention mask: position_ids delimit the examples."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[Example]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            gap = width - len(row["input_ids"])
            batch["input_ids"].append(row["input_ids"] + [self.pad_token_id] * gap)
            batch["labels"].append(row["labels"] + [IGNORE] * gap)
            # Padding forms its own segment, so no real token attends to it.
            batch["position_ids"].append(row["position_ids"] + list(range(gap)))
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


def padded_collator(tokenizer):
    """Without packing: pad each batch to its longest example (labels padded with IGNORE)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE)

"""Tiny random-init causal LMs with a real tokenizer, built offline.

The Hugging Face Hub is not reachable from every lab host (nor from CI), yet the training smoke of
`llmlab verify --level 2` and the tests need a model that loads through the ordinary
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` path. This module builds one:
a byte-level BPE tokenizer trained in-process on a small built-in corpus, with a chat template, an EOS
token and a pad token distinct from EOS, plus a Llama or GPT-2 of a few hundred thousand parameters.
Everything is seeded, so two builds with the same arguments produce identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

BOS_TOKEN = "<|begin|>"
EOS_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Zephyr-style: every assistant turn ends with EOS, so a model fine-tuned on chat learns to stop.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A GPU server runs the training job while the model store keeps the weights.",
    "Fine-tuning adapts a pretrained language model to a new task with a small dataset.",
    "Low-rank adapters train a few million parameters instead of billions.",
    "The tokenizer splits text into tokens, and the model predicts the next token.",
    "Question: what is the capital of France? Answer: Paris.",
    "Question: how many legs does a spider have? Answer: eight.",
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "Instruction: translate to French. Input: good morning. Output: bonjour.",
    "Instruction: summarise. Input: the cat sat on the mat all day. Output: a lazy cat.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000.",
    "Colours: red, green, blue, yellow, orange, purple, black, white.",
    "Days: Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday.",
    "Memory is measured in gibibytes; throughput in tokens per second.",
    "Hello! How can I help you today? I would like to train a model, please.",
    "Sure. First write a config file, then run llmlab train config.yaml.",
)


def train_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer (GPT-2 style) trained on CORPUS, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN, *ROLE_TOKENS]
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so frequent pairs win the merges deterministically rather than by tie-breaking.
    core.train_from_iterator(list(CORPUS) * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=1024,
        padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model_config(
    arch: Literal["llama", "gpt2"], tokenizer, hidden_size: int, num_layers: int, max_positions: int
):
    from transformers import GPT2Config, LlamaConfig

    # A frozen random output head with the usual 0.02 init caps logits near +-1 after the final norm, so LoRA
    # could never fit anything; a wider init gives adapters room, as a pretrained head would.
    shared = {
        "initializer_range": 0.25,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if arch == "llama":
        return LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            **shared,
        )
    if arch == "gpt2":
        return GPT2Config(
            n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=max_positions, **shared
        )
    raise ValueError(f"arch: unknown architecture {arch!r} (valid: 'llama', 'gpt2')")


def build_tiny_model(
    path: Path,
    arch: Literal["llama", "gpt2"] = "llama",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 384,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Build and save a random-init causal LM plus tokenizer to `path`; returns `path`.

    The directory loads offline with `AutoModelForCausalLM.from_pretrained(path)` and
    `AutoTokenizer.from_pretrained(path)` (safetensors weights, config.json, tokenizer files, chat template).
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = train_tokenizer(vocab_size)
    config = _model_config(arch, tokenizer, hidden_size, num_layers, max_positions)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

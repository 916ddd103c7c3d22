"""A tiny random-weight chat model, built locally (tests, benchmarks, the local example).

Nothing is downloaded: a byte-level BPE tokenizer is trained on a few inline sentences
with the ``tokenizers`` library, a Llama-shaped model gets random weights from a fixed
seed, and both are saved in Hugging Face layout with safetensors weights and a chat
template, i.e. exactly what format ``transformers`` serves. Its answers are gibberish;
its shapes, tokenizer, template and generation path are real.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CORPUS = (
    "Berth serves machine learning models on Kubernetes from one short manifest. "
    "The quick brown fox jumps over the lazy dog. Hello world, how are you today? "
    "Continuous batching lets new requests join the running batch between decoding steps. "
    "A tokenizer turns text into tokens and tokens back into text; numbers 0 1 2 3 4 5 6 7 8 9."
)


def build(
    path: Path,
    *,
    vocab_size: int = 512,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    context: int = 512,
    seed: int = 0,
) -> Path:
    """Write the model directory at ``path`` (created) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 20, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    end = int(fast.convert_tokens_to_ids("<|end|>"))  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=context,
        bos_token_id=fast.bos_token_id,
        eos_token_id=[fast.eos_token_id, end],
        pad_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = [fast.eos_token_id, end]
    model.generation_config.pad_token_id = fast.eos_token_id
    model.save_pretrained(str(path), safe_serialization=True)
    fast.save_pretrained(str(path))
    for f in path.iterdir():  # safetensors writes 0600; the runtime pod reads as non-root
        f.chmod(0o644)
    return path

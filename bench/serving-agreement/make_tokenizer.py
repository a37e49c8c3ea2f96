#!/usr/bin/env python3
"""Builds a Hugging Face tokenizer folder from a GGUF's own vocabulary (offline).

transformers' `AutoTokenizer.from_pretrained(dir, gguf_file=...)` needs PyTorch (its GGUF
reader imports torch); this builds the same byte-level BPE from the GGUF's tokens and merges
with `tokenizers` alone. It covers the `gpt2` tokenizer model with the `smollm` pre-tokenizer
(SmolLM/SmolLM2: digits split one by one, then GPT-2's byte-level regex), which is what
SmolLM2-135M-Instruct uses. Usage: make_tokenizer.py MODEL.gguf OUT_DIR
"""
import sys

from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken
from transformers import PreTrainedTokenizerFast


def main(gguf_path: str, out: str) -> None:
    r = GGUFReader(gguf_path)
    f = lambda k: r.fields[k].contents()
    model, pre = f("tokenizer.ggml.model"), f("tokenizer.ggml.pre")
    if model != "gpt2" or pre != "smollm":
        sys.exit(f"unsupported tokenizer {model}/{pre}: this script knows gpt2/smollm only")
    tokens = f("tokenizer.ggml.tokens")
    types = f("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in f("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # control tokens (type 3) are special
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
    )
    name = lambda k: tokens[f(k)]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=name("tokenizer.ggml.bos_token_id"),
        eos_token=name("tokenizer.ggml.eos_token_id"),
        unk_token=name("tokenizer.ggml.unknown_token_id"),
        pad_token=name("tokenizer.ggml.padding_token_id"),
        add_bos_token=False,
    )
    if "tokenizer.chat_template" in r.fields:
        fast.chat_template = f("tokenizer.chat_template")
    fast.save_pretrained(out)
    print(f"tokenizer of {len(tokens)} tokens written to {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

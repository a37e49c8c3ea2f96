#!/usr/bin/env python3
"""Writes the study's prompts, the same ones in the two formats the tools read.

Each prompt is a distinct number then common English words, cut to exactly PROMPT_TOKENS
tokens of the model's tokenizer (the folder make_tokenizer.py wrote), so that every request
costs the server the same prefill whatever order a tool sends them in.

  quantbench: prompts.jsonl         {"prompt": ..., "output_tokens": N}
  AIPerf:     prompts-aiperf.jsonl  {"text": ..., "output_length": N}   (--custom-dataset-type single_turn)

Usage: make_prompts.py TOKENIZER_DIR OUT_DIR COUNT PROMPT_TOKENS OUTPUT_TOKENS
"""
import json
import random
import sys

from transformers import AutoTokenizer

WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city name team minute idea kid body back parent "
    "face others level office door health person art war history party result change morning "
    "reason research"
).split()


def main(tok_dir: str, out: str, count: int, prompt_tokens: int, output_tokens: int) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    rng = random.Random(20261208)
    qb, ap = [], []
    for i in range(count):
        words = [f"Note {100000 + i * 7919 % 900000}:"]
        words += [rng.choice(WORDS) for _ in range(prompt_tokens * 2)]
        ids = tok(" ".join(words), add_special_tokens=False).input_ids[:prompt_tokens]
        text = tok.decode(ids)
        # the cut must round-trip: the server tokenizes the text again
        n = len(tok(text, add_special_tokens=False).input_ids)
        if n != prompt_tokens:
            sys.exit(f"prompt {i}: {n} tokens after decoding, not {prompt_tokens}")
        qb.append({"prompt": text, "output_tokens": output_tokens})
        ap.append({"text": text, "output_length": output_tokens})
    for name, rows in (("prompts.jsonl", qb), ("prompts-aiperf.jsonl", ap)):
        with open(f"{out}/{name}", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{count} prompts of {prompt_tokens} tokens, {output_tokens} output tokens each, in {out}")


if __name__ == "__main__":
    a = sys.argv
    main(a[1], a[2], int(a[3]), int(a[4]), int(a[5]))

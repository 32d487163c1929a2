"""Teach a small GPT a visible preference: supervised fine-tuning, then DPO.

The task: "Greet <name>." -> "Hello, <name>." Supervised fine-tuning (SFT)
teaches the greeting from examples in which 3 answers in 4 are plain
("Hello, Tomi.") and 1 in 4 is warm ("Hello, Tomi! Have a great day!").
Greedy decoding then answers plainly. DPO on pairs that prefer the warm
answer to the plain one then makes the model answer warmly, also for names
it never saw. The script prints answers to held-out names before and after
DPO, and DPO's held-out reward accuracy (TRL's `rewards/accuracies`).

    KERAS_BACKEND=jax .venv/bin/python examples/preference_tuning.py
    KERAS_BACKEND=torch .venv/bin/python examples/preference_tuning.py --lora-rank 8

Everything goes to --out (default runs/preference_tuning): the JSON Lines
files and the two run directories, `sft/` and `dpo/`, which `keras-gpt
generate` reads (`keras-gpt generate runs/preference_tuning/dpo --prompt
"Greet Ana." --temperature 0`). About two minutes on 2 CPU cores.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import keras_gpt
from keras_gpt import GPT, GPTConfig
from keras_gpt.finetune import dpo, finetune, load_source
from keras_gpt.tokenizers import CharTokenizer
from keras_gpt.training.source import Source

SYLLABLES = ["ka", "lo", "mi", "ra", "to", "ne", "su", "vi", "da", "po", "ze",
             "an", "el", "or", "ju", "be"]
PLAIN, WARM = "Hello, {}.", "Hello, {}! Have a great day!"


def names(count, seed):
    rng = random.Random(seed)
    found = set()
    while len(found) < count:
        found.add("".join(rng.choice(SYLLABLES) for _ in range(
            rng.choice((2, 3)))).capitalize())
    return sorted(found)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def greedy_answers(run_dir, prompts):
    """The answers of the model in `run_dir` (greedy decoding)."""
    source = load_source(run_dir)
    return keras_gpt.generate(source.model, prompts,
                              tokenizer=source.tokenizer, max_new_tokens=40,
                              temperature=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/preference_tuning")
    parser.add_argument("--lora-rank", type=int,
                        help="DPO trains LoRA factors only (the reference is "
                             "then the model without them).")
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--dpo-steps", type=int, default=60)
    parser.add_argument("--beta", type=float, default=1.0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} already holds files; pass another --out.")
    out.mkdir(parents=True, exist_ok=True)

    everyone = names(420, seed=0)
    random.Random(1).shuffle(everyone)
    seen, held_out = everyone[:400], everyone[400:]
    rng = random.Random(2)
    sft = write_jsonl(out / "sft.jsonl", [
        {"prompt": f"Greet {n}.", "completion": " " + (
            WARM if rng.random() < 0.25 else PLAIN).format(n)} for n in seen])
    prefs = write_jsonl(out / "prefs.jsonl", [
        {"prompt": f"Greet {n}.", "chosen": " " + WARM.format(n),
         "rejected": " " + PLAIN.format(n)} for n in seen])
    tokenizer = CharTokenizer.train([sft.read_text()])

    # A GPT trained from scratch on the greetings alone; a run directory or
    # a converted GPT-2 would be the source of a real run.
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64,
                       d_model=96, n_layers=2, n_heads=4)
    source = Source(GPT(config), tokenizer, {"path": "a new GPT",
                                             "kind": "scratch"})
    finetune(source, out / "sft", sft=str(sft), steps=args.sft_steps,
             eval_every=args.sft_steps // 2, batch_size=32,
             learning_rate=3e-3, samples=0, cache_dir=out / "cache",
             verbose=0)
    prompts = [f"Greet {n}." for n in held_out]
    before = greedy_answers(out / "sft", prompts)

    final = dpo(out / "sft", out / "dpo", data=prefs, beta=args.beta,
                lora_rank=args.lora_rank, steps=args.dpo_steps,
                eval_every=args.dpo_steps // 2, batch_size=16,
                learning_rate=2e-3 if args.lora_rank else 3e-4,
                samples=0, cache_dir=out / "cache", verbose=0)
    after = greedy_answers(out / "dpo", prompts)

    print("Greedy answers to names neither run saw:")
    for prompt, b, a in list(zip(prompts, before, after))[:6]:
        print(f"  {prompt:16s} after SFT: {b!r:36s} after DPO: {a!r}")
    warm = [sum(t.strip().endswith("great day!") for t in texts)
            for texts in (before, after)]
    print(f"Warm answers to the {len(prompts)} held-out names: {warm[0]} "
          f"after SFT, {warm[1]} after DPO.")
    print(f"DPO on held-out pairs (beta {args.beta}): reward accuracy "
          f"{final['val_rewards/accuracies']:.2f}, rewards chosen "
          f"{final['val_rewards/chosen']:.2f} and rejected "
          f"{final['val_rewards/rejected']:.2f}, margin "
          f"{final['val_rewards/margins']:.2f}.")
    print(f"Run directories: {out / 'sft'} and {out / 'dpo'}.")


if __name__ == "__main__":
    main()

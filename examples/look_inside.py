"""Look inside a trained GPT, in the order of the seed text.

    keras-gpt train --out runs/demo                 # or: keras-gpt convert
    KERAS_BACKEND=jax python examples/look_inside.py runs/demo \
        --prompt "The return statement returns the value of"

Works on any run directory: one trained by `keras-gpt train`, or GPT-2's
weights converted with `keras-gpt convert --from hf path/to/gpt2 --out
runs/gpt2` (then try --prompt "When Mary and John went to the store, John
gave a drink to"). Prints what each section shows and writes its pictures
to --out (default RUN_DIR/look_inside).

§5 embeddings: tokens as directions (nearest tokens, analogies).
§12 masking and §13 attention: q·k, the causal mask, what each head reads.
§14 the MLP: neurons that fire on the prompt and what they write.
Logit lens: the prediction forming layer by layer.
Heads: previous-token / induction heads, the heads that write the answer,
and activation patching (where the prompt's information is carried).
"""

import argparse
import math
from pathlib import Path

import keras
import numpy as np
from keras import ops

import keras_gpt  # noqa: F401  (registers GPT for load_model)
from keras_gpt import interpret
from keras_gpt.files import run_model_file, run_tokenizer_dir
from keras_gpt.interpret import geometry, pictures
from keras_gpt.interpret.html import attention_page
from keras_gpt.tokenizers import load_tokenizer

WORDS = [" man", " woman", " king", " queen", " the", " a", " return",
         " value", " function", " list", " is", " are", " he", " she",
         " one", " two", " True", " False"]


def section(title):
    print(f"\n=== {title} " + "=" * max(0, 66 - len(title)))


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def show(tokenizer, token):
    return repr(tokenizer.decode([int(token)]))


def embeddings(model, tokenizer):
    section("§5 Word embeddings: tokens are directions in W_E")
    words = [w for w in WORDS if len(tokenizer.encode(w)) == 1]
    for word in words[:3]:
        near = geometry.nearest_tokens(model, word, tokenizer, k=5)
        print(f"nearest to {word!r}:",
              ", ".join(f"{s.token!r} {s.score:.2f}" for s in near))
    if {" man", " woman", " king"} <= set(words):
        answers = geometry.analogy(model, tokenizer, " man", " king",
                                   " woman", k=5)
        print("man : king = woman : ?",
              ", ".join(f"{s.token!r} {s.score:.2f}" for s in answers))
    elif len(words) >= 3:
        a, b, c = words[:3]
        answers = geometry.analogy(model, tokenizer, a, b, c, k=3)
        print(f"{a!r} : {b!r} = {c!r} : ?",
              ", ".join(f"{s.token!r} {s.score:.2f}" for s in answers))


def attention(model, tokenizer, ids, tokens, out):
    section("§12 Masking and §13 attention: softmax(q·k / sqrt(d_head))")
    c = model.config
    last = c.n_layers - 1
    _, cache = model.run_with_cache(ids, names=lambda n: ".attn." in n and (
        n.startswith("blocks.0.") or n.endswith("pattern")))
    q, k = numpy(cache["blocks.0.attn.q"]), numpy(cache["blocks.0.attn.k"])
    if c.positions == "rotary":
        print("(rotary positions: q and k are rotated before the product)")
    else:
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c.d_head)
        kept = np.tril(np.ones(scores.shape[-2:], bool))
        model_scores = numpy(cache["blocks.0.attn.scores"])
        print("q·k/sqrt(d_head) by hand vs the model's scores, largest "
              f"difference: {np.abs(scores - model_scores)[..., kept].max():.1e}")
    patterns = np.stack([numpy(cache[f"blocks.{i}.attn.pattern"])[0]
                         for i in range(c.n_layers)])
    above = np.triu(np.ones(patterns.shape[-2:], bool), k=1)
    print("largest weight on a future token (masked to -inf before the "
          f"softmax): {patterns[..., above].max():.1e}; rows sum to "
          f"{patterns.sum(-1).min():.4f}..{patterns.sum(-1).max():.4f}")
    print(f"what the last token ({tokens[-1]}) reads in layer {last}:")
    for head in range(c.n_heads):
        row = patterns[last, head, -1]
        top = np.argsort(-row)[:3]
        print(f"  head {head}: " + ", ".join(
            f"{tokens[j]} {row[j]:.2f}" for j in top))
    pictures.plot_attention(patterns, tokens, out / "attention.png")
    (out / "attention.html").write_text(attention_page(patterns, tokens),
                                        encoding="utf-8")
    print(f"pictures: {out / 'attention.png'}, {out / 'attention.html'}")


def mlp(model, tokenizer, ids, predicted):
    section("§14 The MLP: neurons that fire, and what they write")
    c = model.config
    last = c.n_layers - 1
    _, cache = model.run_with_cache(ids, names=[f"blocks.{last}.mlp.post"])
    post = numpy(cache[f"blocks.{last}.mlp.post"])[0, -1]
    w_down = numpy(model.blocks[last].mlp.down.kernel)  # (d_mlp, d_model)
    w_u = numpy(model.token_embedding.embeddings).T if c.tie_embeddings \
        else numpy(model.unembedding.kernel)
    print(f"layer {last}, last position: {np.mean(post > 0):.0%} of "
          f"{c.d_mlp} neurons are positive; the strongest:")
    for neuron in np.argsort(-post)[:3]:
        promoted = np.argsort(-(w_down[neuron] @ w_u))[:5]
        print(f"  neuron {neuron} ({post[neuron]:.2f}) adds a direction "
              "that W_U reads as " + ", ".join(
                  show(tokenizer, t) for t in promoted))
    base = numpy(model(ids))[0, -1]
    print(f"p({show(tokenizer, predicted)}) = "
          f"{_softmax(base)[predicted]:.3f}; with one MLP's output removed:")
    for layer in range(c.n_layers):
        logits = model.run_with_hooks(
            ids, {f"blocks.{layer}.mlp_out": lambda v: v * 0.0})
        print(f"  without MLP {layer}: "
              f"{_softmax(numpy(logits)[0, -1])[predicted]:.3f}")


def lens(model, tokenizer, ids, tokens, out):
    section("Logit lens: each layer's stream read through ln_final and W_U")
    reading = interpret.logit_lens(model, ids, top_k=3)
    for row, label in enumerate(pictures.lens_row_labels(reading.names)):
        guesses = ", ".join(
            f"{show(tokenizer, t)} {p:.2f}" for t, p in
            zip(reading.top_ids[row, 0, -1], reading.top_probs[row, 0, -1]))
        print(f"  {label:>13}: KL {reading.kl[row, 0, -1]:6.3f}  {guesses}")
    top = [[pictures.token_labels(tokenizer, [t])[0] for t in r]
           for r in reading.top_ids[:, 0, :, 0]]
    pictures.plot_logit_lens(reading, tokens, top, out / "logit_lens.png")
    print(f"picture: {out / 'logit_lens.png'}")


def heads(model, tokenizer, ids, tokens, predicted, out):
    section("Heads: what kind each is, and which write the answer")
    for kind in interpret.HEAD_KINDS:
        scores = interpret.detect_heads(model, kind)
        layer, head = np.unravel_index(scores.argmax(), scores.shape)
        print(f"  best {kind} head: layer {layer} head {head} "
              f"({scores[layer, head]:.2f})")
    runner_up = int(np.argsort(-numpy(model(ids))[0, -1])[1])
    attribution = interpret.direct_logit_attribution(model, ids, predicted,
                                                     runner_up)
    print(f"logit[{show(tokenizer, predicted)}] - logit["
          f"{show(tokenizer, runner_up)}] = {attribution.total:.3f}; "
          "heads writing it most directly:")
    for layer, head, effect in attribution.top_heads(3):
        print(f"  layer {layer} head {head}: {effect:+.3f}")
    print("  MLPs: " + ", ".join(f"{e:+.3f}" for e in attribution.mlp))

    # Patching: swap the next-to-last token for another one, then put back
    # the clean stream one (layer, position) at a time: where the swapped
    # token's information sits, block by block.
    clean = np.asarray(ids)
    at = max(0, clean.shape[1] - 2)
    corrupted = clean.copy()
    corrupted[0, at] = (clean[0, at] + 1) % model.config.vocab_size

    def metric(logits):
        return logits[0, -1, predicted] - logits[0, -1, runner_up]

    effects = interpret.activation_patching(model, clean, corrupted, metric)
    print(f"patching the residual stream ({show(tokenizer, clean[0, at])} -> "
          f"{show(tokenizer, corrupted[0, at])} at position {at}): the metric "
          f"is {metric(numpy(model(clean))):.3f} clean, "
          f"{metric(numpy(model(corrupted))):.3f} corrupted; patched:")
    for layer, row in enumerate(effects):
        best = int(np.argmax(row))
        print(f"  into block {layer}: best at position {best} "
              f"({tokens[best]}): {row[best]:.3f}")
    pictures.plot_patching(effects, out / "patching.png", "resid_pre",
                           tokens)
    print(f"picture: {out / 'patching.png'}")


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="A run directory (train/convert).")
    parser.add_argument("--prompt", default="The return statement returns "
                        "the value of", help="The text to look at.")
    parser.add_argument("--out", help="Where pictures go (default "
                                      "RUN_DIR/look_inside).")
    args = parser.parse_args()
    model = keras.models.load_model(run_model_file(args.run_dir))
    tokenizer = load_tokenizer(run_tokenizer_dir(args.run_dir))
    out = Path(args.out or Path(args.run_dir) / "look_inside")
    out.mkdir(parents=True, exist_ok=True)
    ids = np.array([tokenizer.encode(args.prompt)], dtype="int32")
    ids = ids[:, -model.config.context_length:]
    tokens = pictures.token_labels(tokenizer, ids[0])
    predicted = int(np.argmax(numpy(model(ids))[0, -1]))
    print(f"prompt: {' | '.join(tokens)}\nnext token: "
          f"{show(tokenizer, predicted)}")
    embeddings(model, tokenizer)
    attention(model, tokenizer, ids, tokens, out)
    mlp(model, tokenizer, ids, predicted)
    lens(model, tokenizer, ids, tokens, out)
    heads(model, tokenizer, ids, tokens, predicted, out)


if __name__ == "__main__":
    main()

"""keras_gpt.convert: Hugging Face and KerasHub GPT-2 <-> keras_gpt.GPT.

Every model is built here with random weights (transformers' GPT2Config /
GPT2LMHeadModel, keras_hub's GPT2Backbone) and a tiny byte-level BPE trained
here: no downloads. Hugging Face logits are computed with torch whatever
KERAS_BACKEND is.
"""

import argparse
import json

import keras
import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig, generate
from keras_gpt.convert import (ConversionError, from_huggingface,
                               from_keras_hub, to_huggingface, to_keras_hub,
                               write_run)
from keras_gpt.convert._common import model_weights
from tests.conftest import to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 300
TRICKY = ["Hello world", "a  b   c    d", "tabs\there\t\tand\n\nnewlines\n",
          "don't I'll we've they're it's", "digits 1234567 3.14159",
          "naïve café — Ünïcödé 日本語", "emoji 🙂👍🏽 done", "  leading",
          "trailing  ", "a\n ", "<|endoftext|>after"]


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("tok")
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(TRICKY * 20 + ["the quick brown fox"] * 20,
                            vocab_size=VOCAB, min_frequency=1,
                            special_tokens=["<|endoftext|>"],
                            show_progress=False)
    bpe.save_model(str(folder))
    return folder


def _hf_folder(folder, tokenizer_files, seed=0, **overrides):
    """Saves a random GPT2LMHeadModel (LayerNorms and biases random too)."""
    kwargs = dict(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2,
                  n_head=2, bos_token_id=0, eos_token_id=0)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.eval()
    hf.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((tokenizer_files / name).read_bytes())
    return hf


def _hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.as_tensor(np.asarray(ids))).logits.numpy()


def _logits(model, ids):
    """Our logits, computed in one compiled call (fast on JAX)."""
    return np.asarray(model.predict_on_batch(np.asarray(ids)))


def _ids(shape, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, shape)


SHAPES = [
    dict(n_layer=1, n_head=2, n_embd=32),
    dict(n_layer=2, n_head=4, n_embd=32, n_inner=48,
         tie_word_embeddings=False, activation_function="relu"),
    dict(n_layer=3, n_head=1, n_embd=16,
         activation_function="gelu_pytorch_tanh", layer_norm_epsilon=1e-6),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_from_huggingface_logits_match(tmp_path, tokenizer_files, shape):
    hf = _hf_folder(tmp_path, tokenizer_files, **shape)
    model, tokenizer = from_huggingface(tmp_path)
    c = model.config
    assert (c.n_layers, c.n_heads, c.d_model) == (
        shape["n_layer"], shape["n_head"], shape["n_embd"])
    assert c.d_mlp == shape.get("n_inner") or 4 * c.d_model
    assert c.tie_embeddings == shape.get("tie_word_embeddings", True)
    assert tokenizer.vocab_size == VOCAB
    for ids in (_ids((2, 7)), _ids((1, 64), seed=1)):
        np.testing.assert_allclose(_logits(model, ids), _hf_logits(hf, ids),
                                   atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_huggingface(tmp_path, tokenizer_files):
    hf = _hf_folder(tmp_path, tokenizer_files)
    model, _ = from_huggingface(tmp_path)
    prompt = [5, 17, 42, 99]
    ours = generate(model, prompt, max_new_tokens=30, temperature=0,
                    eot_id=None)
    row = list(prompt)
    for _ in range(30):
        row.append(int(_hf_logits(hf, [row])[0, -1].argmax()))
    assert list(ours) == row[len(prompt):]


def test_pytorch_bin_and_bare_names(tmp_path, tokenizer_files):
    hf = _hf_folder(tmp_path, tokenizer_files)
    (tmp_path / "model.safetensors").unlink()
    state = {k.removeprefix("transformer."): v
             for k, v in hf.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    model, _ = from_huggingface(tmp_path)
    ids = _ids((1, 9))
    np.testing.assert_allclose(_logits(model, ids), _hf_logits(hf, ids),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_through_huggingface_is_exact(tmp_path, tokenizer_files,
                                                 tied):
    _hf_folder(tmp_path / "src", tokenizer_files)
    _, tokenizer = from_huggingface(tmp_path / "src")
    model = GPT(GPTConfig(vocab_size=VOCAB, context_length=32, d_model=32,
                          n_layers=2, n_heads=4, d_mlp=40,
                          tie_embeddings=tied))
    out = to_huggingface(model, tokenizer, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = _ids((2, 11))
    np.testing.assert_allclose(_hf_logits(hf, ids), _logits(model, ids),
                               atol=1e-4, rtol=1e-4)
    fast = transformers.GPT2TokenizerFast.from_pretrained(out)
    assert fast("a  b\tc")["input_ids"] == tokenizer.encode("a  b\tc")
    back, back_tokenizer = from_huggingface(out)
    assert back.config == model.config
    mine, theirs = model_weights(model), model_weights(back)
    assert set(mine) == set(theirs)
    for path in mine:
        np.testing.assert_array_equal(to_numpy(theirs[path]),
                                      to_numpy(mine[path]), err_msg=path)
    assert back_tokenizer.vocab == tokenizer.vocab
    assert back_tokenizer.merges == tokenizer.merges


@pytest.mark.backend_independent
def test_tokenizer_matches_gpt2_tokenizer_fast(tmp_path, tokenizer_files):
    _hf_folder(tmp_path, tokenizer_files)
    _, tokenizer = from_huggingface(tmp_path)
    fast = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    for text in TRICKY + ["\t \n  \r\n x", "😀😀 ab12 you'RE"]:
        assert tokenizer.encode(text) == fast(text)["input_ids"], text
        assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the graph tokenizer is TensorFlow; once is enough")
def test_graph_tokenizer_matches_except_trailing_space_runs(tmp_path,
                                                            tokenizer_files):
    import re

    import tensorflow as tf

    _hf_folder(tmp_path, tokenizer_files, n_layer=1)
    _, tokenizer = from_huggingface(tmp_path)
    texts = TRICKY + ["\t \n  \r\n x", "DON'T", "a \t b", "a   "]
    for text in texts:
        # Documented (keras_gpt.convert, GPT2Tokenizer): a text ENDING in a
        # run of >= 2 whitespace characters whose last is a space may split
        # differently in the graph (e.g. "trailing  ", "a   ").
        if re.search(r"\s \Z", text) and re.search(r"\s\s\Z", text):
            continue
        graph = tokenizer.tokenize_graph(tf.constant([text])).to_list()[0]
        assert graph == tokenizer.encode(text), text


def test_converted_model_fine_tunes(tmp_path, tokenizer_files):
    _hf_folder(tmp_path, tokenizer_files)
    model, _ = from_huggingface(tmp_path)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    data = np.tile(np.arange(17) * 7 % VOCAB, (8, 1))
    x, y = data[:, :-1], data[:, 1:]
    history = model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


# KerasHub ------------------------------------------------------------------


def _backbone(**overrides):
    import keras_hub

    kwargs = dict(vocabulary_size=VOCAB, num_layers=2, num_heads=2,
                  hidden_dim=32, intermediate_dim=48, max_sequence_length=32,
                  dropout=0.0)
    kwargs.update(overrides)
    backbone = keras_hub.models.GPT2Backbone(**kwargs)
    rng = np.random.default_rng(3)
    for v in backbone.weights:  # LayerNorms and biases random too
        v.assign(to_numpy(v) + 0.05 * rng.standard_normal(v.shape))
    return backbone


def _hub_logits(backbone, ids):
    hidden = backbone({"token_ids": ids,
                       "padding_mask": np.ones_like(ids, dtype=bool)})
    embeddings = to_numpy(backbone.token_embedding.embeddings)
    return to_numpy(hidden) @ embeddings.T


@pytest.mark.parametrize("shape", [{}, dict(num_layers=1, num_heads=4)])
def test_keras_hub_both_ways(shape):
    backbone = _backbone(**shape)
    model, tokenizer = from_keras_hub(backbone)
    assert tokenizer is None
    ids = _ids((2, 9))
    expected = _hub_logits(backbone, ids)
    np.testing.assert_allclose(_logits(model, ids), expected, atol=1e-4,
                               rtol=1e-4)
    back = to_keras_hub(model)
    for a, b in zip(backbone.weights, back.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b),
                                      err_msg=a.path)
    np.testing.assert_allclose(_hub_logits(back, ids), expected, atol=1e-5)


def test_keras_hub_causal_lm_preset_through_the_command(tmp_path,
                                                        tokenizer_files):
    import keras_hub

    from keras_gpt.commands import convert as convert_command
    from keras_gpt.commands.generate import load_run

    vocab = json.loads((tokenizer_files / "vocab.json").read_text())
    merges = (tokenizer_files / "merges.txt").read_text().split("\n")[1:-1]
    hub_tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab,
                                                   merges=merges)
    lm = keras_hub.models.GPT2CausalLM(
        backbone=_backbone(vocabulary_size=len(vocab), num_layers=1),
        preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(
            tokenizer=hub_tokenizer, sequence_length=16))
    model, tokenizer = from_keras_hub(lm)
    assert tokenizer.vocab == vocab and tokenizer.merges == merges
    lm.save_to_preset(str(tmp_path / "preset"))
    parser = argparse.ArgumentParser()
    convert_command.register(parser.add_subparsers())
    args = parser.parse_args(["convert", "--from", "keras-hub",
                              str(tmp_path / "preset"), "--out",
                              str(tmp_path / "run")])
    assert args.run(args) == 0
    loaded, loaded_tokenizer = load_run(tmp_path / "run")
    ids = _ids((1, 5)) % len(vocab)
    np.testing.assert_allclose(_logits(loaded, ids),
                               _hub_logits(lm.backbone, ids), atol=1e-4,
                               rtol=1e-4)
    assert loaded_tokenizer.encode("a  b\t") == tokenizer.encode("a  b\t")


def test_keras_hub_refuses_what_it_cannot_express():
    model = GPT(GPTConfig(vocab_size=VOCAB, context_length=16, d_model=16,
                          n_layers=1, n_heads=2, positions="rotary"))
    with pytest.raises(ConversionError, match="positions='rotary'"):
        to_keras_hub(model)
    with pytest.raises(ConversionError, match="GPT2Backbone"):
        from_keras_hub(model)


# The command and run directories -------------------------------------------


def test_convert_command_makes_a_run_directory(tmp_path, tokenizer_files):
    from keras_gpt.commands import convert as convert_command
    from keras_gpt.commands.generate import load_run
    from keras_gpt.training import compile_for_pretraining

    hf = _hf_folder(tmp_path / "src", tokenizer_files)
    parser = argparse.ArgumentParser()
    convert_command.register(parser.add_subparsers())
    args = parser.parse_args(["convert", "--from", "hf", str(tmp_path / "src"),
                              "--out", str(tmp_path / "run")])
    assert args.run(args) == 0
    run = tmp_path / "run"
    for name in ("model.keras", "config.json", "run.json", "state.json",
                 "tokenizer/tokenizer.json"):
        assert (run / name).is_file(), name
    model, tokenizer = load_run(run)
    ids = _ids((1, 6))
    np.testing.assert_allclose(_logits(model, ids), _hf_logits(hf, ids),
                               atol=1e-4, rtol=1e-4)
    assert tokenizer.encode("a  b") == from_huggingface(
        tmp_path / "src")[1].encode("a  b")
    # The checkpoint loads as `train --resume` loads it.
    stored = json.loads((run / "run.json").read_text())
    resumed = GPT(GPTConfig.from_json((run / "config.json").read_text()))
    compile_for_pretraining(resumed, total_steps=stored["steps"])
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(run / "model.keras")
    np.testing.assert_array_equal(_logits(resumed, ids), _logits(model, ids))
    with pytest.raises(ConversionError, match="already"):
        args.run(args)


# Bad input: a clear error naming file and tensor, nothing written ----------


def _expect_refusal(folder, out, match, error=ConversionError):
    with pytest.raises(error, match=match):
        model, tokenizer = from_huggingface(folder)
        write_run(model, tokenizer, out)
    assert not out.exists()


@pytest.mark.backend_independent
def test_refuses_another_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertForMaskedLM"],
         "hidden_size": 32}))
    _expect_refusal(tmp_path, tmp_path / "out", r"config\.json.*'bert'")


@pytest.mark.backend_independent
@pytest.mark.parametrize("option, value, match", [
    ("activation_function", "gelu", "exact erf GELU"),
    ("activation_function", "silu", "'silu' is not supported"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse"),
    ("reorder_and_upcast_attn", True, "reorder_and_upcast_attn"),
])
def test_refuses_unsupported_options(tmp_path, tokenizer_files, option, value,
                                     match):
    _hf_folder(tmp_path / "src", tokenizer_files, n_layer=1)
    path = tmp_path / "src" / "config.json"
    hf = json.loads(path.read_text())
    hf[option] = value
    path.write_text(json.dumps(hf))
    _expect_refusal(tmp_path / "src", tmp_path / "out", match)


def test_refuses_bad_weight_files(tmp_path, tokenizer_files):
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    _hf_folder(src, tokenizer_files, n_layer=1)
    weights = src / "model.safetensors"
    good = weights.read_bytes()
    tensors = load_file(weights)

    weights.write_bytes(good[: len(good) // 2])  # truncated
    _expect_refusal(src, tmp_path / "out", r"model\.safetensors.*truncated")

    save_file({k: v for k, v in tensors.items()
               if k != "transformer.h.0.mlp.c_fc.bias"}, weights)  # missing
    _expect_refusal(src, tmp_path / "out",
                    r"model\.safetensors.*'transformer\.h\.0\.mlp\.c_fc\.bias'"
                    r" is missing")

    save_file(tensors, weights)
    hf = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**hf, "n_inner": 40}))
    _expect_refusal(src, tmp_path / "out",
                    r"model\.safetensors.*'transformer\.h\.0\.mlp\.c_fc\."
                    r"weight' has shape \(32, 128\).*\(32, 40\)")

    weights.unlink()
    _expect_refusal(src, tmp_path / "out", "No weights", FileNotFoundError)


def test_to_huggingface_writes_nothing_on_refusal(tmp_path, tokenizer_files):
    model = GPT(GPTConfig(vocab_size=VOCAB, context_length=16, d_model=16,
                          n_layers=1, n_heads=2, positions="sinusoidal"))
    with pytest.raises(ConversionError, match="positions='sinusoidal'"):
        to_huggingface(model, None, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert list(tmp_path.iterdir()) == []

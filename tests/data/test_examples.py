"""Fine-tuning data: JSON Lines reading, the chat template, tokenizing,
fitting the context, the cache and the padded arrays."""

import json
import warnings

import numpy as np
import pytest

from keras_gpt.data import (build_preference_pairs, build_sft_examples,
                            chat_text)
from keras_gpt.data.batches import ordered_batches, shuffled_batches
from keras_gpt.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer

pytestmark = pytest.mark.backend_independent

BYTE = ByteTokenizer()
EOT = BYTE.eot_id


def write(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r))
                            + "\n" for r in records))
    return path


def ids(text):
    return BYTE.encode(text)


def test_prompt_completion_and_messages(tmp_path):
    path = write(tmp_path / "sft.jsonl",
                 {"prompt": "Q:", "completion": " A", "extra": 1}, "  ",
                 {"prompt": "", "completion": "x"},
                 {"messages": [{"role": "system", "content": ""},
                               {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Yo"},
                               {"role": "user", "content": "?"},
                               {"role": "assistant", "content": "!"}]})
    examples = build_sft_examples(path, BYTE, 64)
    assert list(examples.lines) == [1, 3, 4]  # the blank line is skipped
    assert list(examples.tokens[0]) == ids("Q: A") + [EOT]
    assert list(examples.learned[0]) == [0, 0, 1, 1, 1]
    assert list(examples.tokens[1]) == [EOT] + ids("x") + [EOT]  # empty prompt
    chat = [{"role": "system", "content": ""}, {"role": "user",
                                                "content": "Hi"},
            {"role": "assistant", "content": "Yo"}, {"role": "user",
                                                     "content": "?"},
            {"role": "assistant", "content": "!"}]
    assert list(examples.tokens[2]) == BYTE.encode(chat_text(chat))
    learned = "".join(BYTE.decode([t]) for t, m in zip(
        examples.tokens[2], examples.learned[2]) if m)
    assert learned == "Yo<|endoftext|>!<|endoftext|>"
    tokens, weights = examples.arrays()
    assert tokens.shape == (3, examples.stats["longest"])
    # weights[i, t] is 1 when tokens[i, t + 1] is learned; padding is 0.
    assert list(weights[0]) == [0, 1, 1, 1] + [0] * (tokens.shape[1] - 5)
    assert (tokens[0, 5:] == EOT).all()


def test_chat_text_encodes_as_its_pieces():
    """The template joins pieces at newlines and end-of-text, so encoding
    the text whole gives the ids the pieces gave (what a prompt at
    generation time sees) for a BPE tokenizer too."""
    bpe = BPETokenizer.train(["user: assistant: hello there, how are you?"
                              " fine thanks"] * 20, vocab_size=300)
    chat = [{"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "fine thanks"}]
    pieces = []
    for m in chat:
        pieces += bpe.encode(f"{m['role']}:\n") + bpe.encode(m["content"])
        pieces.append(bpe.eot_id)
    pieces += bpe.encode("assistant:\n")
    assert bpe.encode(chat_text(chat, add_generation_prompt=True)) == pieces


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a"}', "line 2: missing field 'completion'"),
    ('{"completion": "a"}', "line 2: missing field 'prompt'"),
    ('{"text": "a"}', "line 2: missing field 'prompt' and 'completion'"),
    ('{"prompt": "a", "completion": 3}',
     "line 2: field 'completion' must be a string, got a number"),
    ('{"prompt": "a", "completion": ""}', "line 2: field 'completion' is "
                                          "empty"),
    ('{"prompt": "a", "completion": "b"', "line 2: not valid JSON"),
    ('["a", "b"]', "line 2: expected a JSON object, got a list"),
    ('{"messages": []}', "line 2: field 'messages' must be a non-empty list"),
    ('{"messages": [{"role": "user"}]}', "line 2: missing field 'messages[0].content'"),
    ('{"messages": [{"role": "user", "content": 1}]}',
     "line 2: field 'messages[0].content' must be a string"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "line 2: field 'messages' has no message with "
                                                          "role 'assistant'"),
    ('{"messages": [{"role": "assistant", "content": ""}]}',
     "line 2: field 'messages[0].content' is empty"),
])
def test_sft_bad_lines_name_the_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "completion": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match="bad.jsonl, " + message
                       .replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(")):
        build_sft_examples(path, BYTE, 64)


def test_bad_bytes_missing_file_and_empty_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n\xff\xfe\n')
    with pytest.raises(ValueError, match="line 2: not UTF-8"):
        build_sft_examples(path, BYTE, 64)
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        build_sft_examples(tmp_path / "nothere.jsonl", BYTE, 64)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no examples"):
        build_sft_examples(path, BYTE, 64)


def test_a_tokenizer_that_cannot_encode_names_line_and_field(tmp_path):
    chars = CharTokenizer.train(["abc :"])
    path = write(tmp_path / "p.jsonl",
                 {"prompt": "ab", "chosen": "c", "rejected": "a"},
                 {"prompt": "ab", "chosen": "c", "rejected": "é"})
    with pytest.raises(ValueError, match=r"line 2: field 'rejected': the "
                                         r"tokenizer cannot encode it: "
                                         r"Character 'é'"):
        build_preference_pairs(path, chars, 16)


def test_identical_pairs_are_skipped_counted_and_warned(tmp_path):
    path = write(tmp_path / "p.jsonl",
                 {"prompt": "a", "chosen": "x", "rejected": "y"},
                 {"prompt": "b", "chosen": "same", "rejected": "same"},
                 {"prompt": "c", "chosen": "z", "rejected": "w"})
    with pytest.warns(UserWarning, match=r"1 pairs skipped because chosen "
                                         r"== rejected \(lines 2\)"):
        pairs = build_preference_pairs(path, BYTE, 16)
    assert list(pairs.lines) == [1, 3] and pairs.stats["identical"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_preference_pairs(path, BYTE, 16, warn=False)
    only = write(tmp_path / "q.jsonl",
                 {"prompt": "b", "chosen": "s", "rejected": "s"})
    with pytest.raises(ValueError, match=r"holds no examples \(1 pairs had "
                                         "chosen == rejected\)"):
        build_preference_pairs(only, BYTE, 16, warn=False)
    for field in ("chosen", "rejected"):
        bad = write(tmp_path / "r.jsonl", {"prompt": "b", "chosen": "s",
                                           "rejected": "t", field: ""})
        with pytest.raises(ValueError, match=f"line 1: field '{field}' is "
                                             "empty"):
            build_preference_pairs(bad, BYTE, 16)


def test_long_prompts_lose_their_oldest_tokens(tmp_path):
    path = write(tmp_path / "p.jsonl",
                 {"prompt": "0123456789", "chosen": "ab", "rejected": "c"},
                 {"prompt": "x", "chosen": "ab", "rejected": "c"})
    pairs = build_preference_pairs(path, BYTE, 8)  # 9 tokens at most
    assert pairs.stats["truncated"] == 1
    assert list(pairs.prompts[0]) == ids("456789")  # 6 + "ab" + end = 9
    arrays = pairs.arrays()
    assert arrays["chosen"].shape == (2, 9)
    assert list(arrays["chosen"][0]) == ids("456789ab") + [EOT]
    assert list(arrays["chosen_mask"][0]) == [0] * 5 + [1, 1, 1]
    assert list(arrays["rejected"][0]) == ids("456789c") + [EOT, EOT]
    assert list(arrays["rejected_mask"][0]) == [0] * 5 + [1, 1, 0]
    sft = write(tmp_path / "s.jsonl",
                {"prompt": "0123456789", "completion": "ab"})
    examples = build_sft_examples(sft, BYTE, 8)
    assert examples.stats["truncated"] == 1
    assert list(examples.tokens[0]) == ids("456789ab") + [EOT]


def test_a_completion_longer_than_the_context_is_refused(tmp_path):
    pairs = write(tmp_path / "p.jsonl",
                  {"prompt": "p", "chosen": "a", "rejected": "12345678"})
    with pytest.raises(ValueError, match=r"line 1: field 'rejected' has 9 "
                                         r"tokens .* at most context_length "
                                         r"= 8 tokens"):
        build_preference_pairs(pairs, BYTE, 8)
    sft = write(tmp_path / "s.jsonl", {"prompt": "p", "completion": "1234567"},
                {"prompt": "p", "completion": "12345678"})
    with pytest.raises(ValueError, match=r"line 2: .* the learned part may "
                                         r"have at most context_length = 8"):
        build_sft_examples(sft, BYTE, 8)


def test_tokenized_once_then_read_from_the_cache(tmp_path):
    path = write(tmp_path / "s.jsonl", {"prompt": "a", "completion": "b"},
                 {"prompt": "c", "completion": "d"})
    cache = tmp_path / "cache"
    first = build_sft_examples(path, BYTE, 16, cache_dir=cache)
    files = list(cache.glob("examples-sft-*.npz"))
    assert len(files) == 1

    class Refusing(ByteTokenizer):
        def encode(self, text):
            raise AssertionError("tokenized again")

    again = build_sft_examples(path, Refusing(), 16, cache_dir=cache)
    assert again.stats == first.stats
    for a, b in zip(again.arrays(), first.arrays()):
        np.testing.assert_array_equal(a, b)
    # Another context length or content is another cache entry.
    build_sft_examples(path, BYTE, 8, cache_dir=cache)
    assert len(list(cache.glob("examples-sft-*.npz"))) == 2
    files[0].write_bytes(b"damaged")  # rebuilt, not an error
    np.testing.assert_array_equal(
        build_sft_examples(path, BYTE, 16, cache_dir=cache).arrays()[0],
        first.arrays()[0])


def test_split_and_batches(tmp_path):
    path = write(tmp_path / "s.jsonl", *[{"prompt": str(i), "completion": "x"}
                                         for i in range(10)])
    examples = build_sft_examples(path, BYTE, 16)
    train, val = examples.split(0.2, seed=3)
    assert (len(train), len(val)) == (8, 2)
    assert sorted([*train.lines, *val.lines]) == list(range(1, 11))
    assert list(examples.split(0.2, seed=3)[1].lines) == list(val.lines)
    tokens, _ = train.arrays()
    batches = list(shuffled_batches(tokens, 3, seed=1).take(6).as_numpy_iterator())
    # Two batches per epoch (8 // 3); each epoch's rows are distinct.
    for epoch in (batches[0:2], batches[2:4]):
        rows = {tuple(r) for b in epoch for r in b}
        assert len(rows) == 6
    resumed = list(shuffled_batches(tokens, 3, seed=1, skip_batches=4)
                   .take(2).as_numpy_iterator())
    np.testing.assert_array_equal(resumed[0], batches[4])
    ordered = list(ordered_batches(tokens, 3).as_numpy_iterator())
    assert [len(b) for b in ordered] == [3, 3, 2]
    with pytest.raises(ValueError, match="--batch-size 9 must be in"):
        shuffled_batches(tokens, 9)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        examples.take([0]).split(0.5)

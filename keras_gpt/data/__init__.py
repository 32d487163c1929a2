"""Corpus -> token file on disk (`keras_gpt.data.windows` turns it into
`tf.data` windows `(x, y)` for `model.fit`).

1. `find_text_files` lists the text files of files, folders and globs.
2. `build_token_file` tokenizes documents once into a flat file of ids
   (end-of-text between documents), cached by content and tokenizer.
3. `load_tokens` memory-maps it; `split_tokens` cuts off the last part for
   validation.
4. `windows.make_windows_dataset` / `windows.make_eval_dataset` read random
   windows of `context_length + 1` tokens: `x = window[:-1]`,
   `y = window[1:]`.

Fine-tuning reads JSON Lines instead (`jsonl`: TRL's field names and the
chat template): `build_sft_examples` and `build_preference_pairs` tokenize
a file once into cached, context-fitted examples (`examples`), and
`batches` turns their padded arrays into `tf.data` batches.

Files are read as UTF-8 with `errors="surrogateescape"` and `newline=""`, so
a document's text holds its exact bytes: `ByteTokenizer` encodes undecodable
bytes as themselves, `BPETokenizer` and `GPT2Tokenizer` encode them as U+FFFD
(via byte fallback), and `CharTokenizer` raises a ValueError naming the
character unless it was made with `unknown="replace"`.
"""

from keras_gpt.data.corpus import (TEXT_EXTENSIONS, check_text_files,
                                   default_corpus,
                                   default_documents, find_text_files,
                                   iter_documents, read_text_file)
from keras_gpt.data.examples import (PreferencePairs, SFTExamples,
                                     build_preference_pairs,
                                     build_sft_examples)
from keras_gpt.data.jsonl import chat_text
from keras_gpt.data.token_files import (FORMAT_VERSION, build_token_file,
                                        load_tokens, split_tokens, token_dtype)

__all__ = ["FORMAT_VERSION", "PreferencePairs", "SFTExamples",
           "TEXT_EXTENSIONS", "build_preference_pairs", "build_sft_examples",
           "build_token_file", "chat_text", "check_text_files",
           "default_corpus", "default_documents", "find_text_files",
           "iter_documents", "load_tokens", "read_text_file", "split_tokens",
           "token_dtype"]

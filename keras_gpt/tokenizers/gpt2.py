"""`GPT2Tokenizer`: GPT-2's published byte-level BPE."""

import json
from pathlib import Path

from keras_gpt.tokenizers.base import EOT_TOKEN, Tokenizer, _tf, _valid_unicode


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE, from its published `vocab.json` and `merges.txt`.

    `encode` / `decode` use Hugging Face `tokenizers`, so ids equal
    `transformers.GPT2TokenizerFast`'s ("<|endoftext|>" is one token, 50256 in
    GPT-2's vocabulary). `tokenize_graph` uses keras_hub's `BytePairTokenizer`
    (its TensorFlow path). Known limitation: when a text ENDS with a run of
    two or more whitespace characters whose last one is a space (e.g. "a  ",
    "a\\n "), keras_hub splits that run differently from the reference, so
    graph ids differ there; runs of spaces, tabs and newlines followed by more
    text match (checked on all runs of up to 4 of " ", "\\t", "\\n"). keras_hub
    called eagerly uses another (Llama-3) split pattern that differs on runs
    of spaces everywhere; `tokenize_graph` never takes that path. Tokenize
    training data with `encode`.

    Args:
        vocab: dict of byte-level token string -> id.
        merges: list of merge rules, "left right" strings, in rank order.
    """

    kind = "gpt2"

    def __init__(self, vocab, merges):
        from tokenizers import AddedToken, Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        if EOT_TOKEN not in vocab:
            raise ValueError(f"The GPT-2 vocabulary has no {EOT_TOKEN!r} token.")
        self.vocab = dict(vocab)
        self.vocab_size = len(self.vocab)
        self.eot_id = self.vocab[EOT_TOKEN]
        self.merges = [m for m in merges if m and not m.startswith("#version")]
        pairs = [tuple(m.split(" ")) for m in self.merges]
        hf = HFTokenizer(models.BPE(self.vocab, pairs))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([AddedToken(EOT_TOKEN, special=True)])
        self._hf = hf

    @classmethod
    def from_files(cls, vocab_path, merges_path):
        """Reads GPT-2's `vocab.json` and `merges.txt`."""
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        merges = Path(merges_path).read_text(encoding="utf-8").split("\n")
        return cls(vocab, merges)

    def encode(self, text):
        return self._hf.encode(_valid_unicode(text)).ids

    def decode(self, ids):
        return self._hf.decode(self._check_ids(ids).tolist(), skip_special_tokens=False)

    def _files(self):
        merges = "#version: 0.2\n" + "\n".join(self.merges) + "\n"
        vocab = json.dumps(self.vocab, ensure_ascii=False)
        return {"vocab.json": vocab.encode(), "merges.txt": merges.encode()}

    @classmethod
    def _from_files(cls, config, files):
        merges = files["merges.txt"].decode("utf-8").split("\n")
        return cls(json.loads(files["vocab.json"]), merges)

    def _build_graph(self, module):
        import keras_hub

        tf = _tf()
        layer = keras_hub.tokenizers.BytePairTokenizer(
            vocabulary=self.vocab, merges=self.merges, unsplittable_tokens=[EOT_TOKEN]
        )
        # Outside the TensorFlow backend a Keras layer is not a tf.Module, so
        # its lookup tables are tracked here for SavedModels.
        resource = tf.saved_model.experimental.TrackableResource
        module.tables = [
            value
            for owner in (layer, layer.cache)
            for value in vars(owner).values()
            if isinstance(value, resource)
        ]
        # Called eagerly, keras_hub switches to a Python path with another
        # split pattern; inside a tf.function it runs the TensorFlow path.
        module.tokenize = tf.function(layer.tokenize, autograph=False)
        module.detokenize = tf.function(layer.detokenize, autograph=False)

    def _tokenize_graph(self, strings):
        return self.graph_module.tokenize(strings)

    def _detokenize_graph(self, ids):
        return self.graph_module.detokenize(ids)

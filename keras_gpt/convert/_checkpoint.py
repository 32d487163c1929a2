"""Reading a Hugging Face checkpoint's tensors: `model.safetensors`, a
sharded `model.safetensors.index.json`, or `pytorch_model.bin` (torch only
then), each error naming the file."""

import json
from pathlib import Path

import numpy as np

from keras_gpt.convert._common import ConversionError


class CheckpointTensors:
    """Lazy access to a checkpoint's tensors by Hugging Face name."""

    def __init__(self, folder):
        self.files = {}  # name -> file
        self._open = {}
        self._torch_state = None
        folder = Path(folder)
        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        bin_file = folder / "pytorch_model.bin"
        if single.is_file():
            self._index_safetensors([single])
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as error:
                raise ConversionError(f"{index}: not a safetensors index "
                                      f"({error}).") from error
            shards = sorted({folder / f for f in weight_map.values()})
            for shard in shards:
                if not shard.is_file():
                    raise ConversionError(f"{index}: shard {shard.name} is "
                                          "missing.")
            self._index_safetensors(shards)
        elif bin_file.is_file():
            self._load_torch(bin_file)
        else:
            raise FileNotFoundError(
                f"No weights in {folder}: expected model.safetensors, "
                "model.safetensors.index.json or pytorch_model.bin.")

    def _index_safetensors(self, files):
        from safetensors import SafetensorError, safe_open

        for path in files:
            try:
                handle = safe_open(str(path), framework="numpy")
                names = list(handle.keys())
            except (SafetensorError, OSError, ValueError) as error:
                raise ConversionError(
                    f"{path}: cannot read safetensors weights ({error}); the "
                    "file is truncated or not a safetensors file.") from error
            self._open[path] = handle
            for name in names:
                self.files[name] = path

    def _load_torch(self, path):
        try:
            import torch
        except ImportError as error:
            raise ConversionError(f"{path}: reading pytorch_model.bin needs "
                                  "torch; convert it to safetensors or "
                                  "install torch.") from error
        try:
            state = torch.load(str(path), map_location="cpu",
                               weights_only=True)
        except Exception as error:  # torch raises many kinds here
            raise ConversionError(f"{path}: cannot read PyTorch weights "
                                  f"({error}); the file is truncated or "
                                  "corrupt.") from error
        self._torch_state = state
        for name in state:
            self.files[name] = path

    def get(self, name):
        """The float32 array of `name` (with or without "transformer.")."""
        candidates = (name, name.removeprefix("transformer."))
        found = next((n for n in candidates if n in self.files), None)
        if found is None:
            where = sorted({str(p) for p in self.files.values()})
            raise ConversionError(f"{', '.join(where) or 'weights'}: tensor "
                                  f"{name!r} is missing.")
        path = self.files[found]
        try:
            if self._torch_state is not None:
                tensor = self._torch_state[found]
                return tensor.detach().float().numpy()
            return np.asarray(self._open[path].get_tensor(found), np.float32)
        except Exception as error:
            raise ConversionError(f"{path}: cannot read tensor {found!r} "
                                  f"({error}).") from error

    def source(self, name):
        candidates = (name, name.removeprefix("transformer."))
        return next((str(self.files[n]) for n in candidates
                     if n in self.files), "weights")

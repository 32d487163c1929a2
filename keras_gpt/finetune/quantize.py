"""`quantize_run`: an int8 copy of a run directory."""

import json
import shutil
from pathlib import Path

from keras_gpt.checkpoints import load_model
from keras_gpt.files import run_model_file, run_tokenizer_dir
from keras_gpt.training.run_dir import RunDir

MODES = ("int8",)


def quantize_run(run_dir, out, mode="int8"):
    """Writes `out`, a run directory holding `run_dir`'s model quantized.

    A LoRA run is merged first. `out` holds `model.keras` (the quantized
    model, no optimizer state), `config.json`, `tokenizer/`, `state.json`
    and `run.json` (the source run's, with `quantized` and `quantized_from`
    added): `keras-gpt generate` and `export` read it, and `train
    --init-from OUT --lora-rank R` trains a LoRA on it. Written to a
    temporary folder and renamed, so a failure leaves nothing.

    Args:
        run_dir: A run directory.
        out: A new (or empty) folder.
        mode: `"int8"`.

    Returns:
        `(out, bytes before, bytes after)`: the sizes of `model.keras`.

    Raises:
        FileNotFoundError: no run, model or tokenizer.
        ValueError: another mode, a model already quantized, or `out` holds
            files.

    Example:

    ```python
    quantize_run("runs/mine", "runs/mine-int8")
    ```
    """
    from keras_gpt.convert._common import write_folder_atomically
    from keras_gpt.model import GPT

    if mode not in MODES:
        raise ValueError(f"--mode {mode!r} is not supported: choose "
                         f"{', '.join(MODES)}.")
    run_dir, out = Path(run_dir), Path(out)
    model_file = run_model_file(run_dir)
    tokenizer_dir = run_tokenizer_dir(run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already holds files; choose another --out.")
    model = load_model(model_file, compile=False)  # one line if damaged
    if not isinstance(model, GPT):
        raise ValueError(f"{model_file} holds a {type(model).__name__}, not "
                         "a keras_gpt GPT.")
    if model.quantization_modes():
        raise ValueError(f"{run_dir} is already quantized "
                         f"({', '.join(sorted(model.quantization_modes()))}).")
    merged = model.lora_rank is not None
    if merged:
        model.merge_lora()
    model.quantize(mode)
    options = {}
    if (run_dir / "run.json").is_file():
        options = RunDir(run_dir).stored_options()
    for key in ("lora_rank", "lora_alpha", "lora_targets"):
        options.pop(key, None)
    options.update(quantized=mode, quantized_from=str(run_dir.resolve()),
                   merged_lora=merged)

    def write(folder):
        shutil.copytree(tokenizer_dir, folder / "tokenizer")
        (folder / "config.json").write_text(model.config.to_json())
        (folder / "run.json").write_text(json.dumps(options, indent=2))
        for name in ("state.json",):
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, folder / name)
        model.save(folder / "model.keras")

    write_folder_atomically(out, write)
    return out, model_file.stat().st_size, (out / "model.keras").stat().st_size

"""What a run directory holds on disk, and what can be done with it.

A run is set up (`tokenizer/`, `config.json`, then `run.json`), then
checkpointed at each evaluation: a `metrics.jsonl` row, then `model.keras`
(renamed into place whole), then `state.json`. A kill can stop it
anywhere, so `RunDir.inspect` tells the cases apart and every case has a
way on:

- nothing, or an empty folder: a new run starts there;
- an unfinished set-up (no `run.json`, only `tokenizer/`, `config.json`
  and temporary files): a new run clears it and starts;
- set up, no checkpoint yet: `--resume` starts it again from step 0 with
  its stored options (the same initial weights and data, so the same run);
- checkpointed: `--resume` continues from the checkpoint's step.

Temporary files (`.tmp-*`) of a killed writer are removed on resume, and
`metrics.jsonl` rows past the checkpoint's step are dropped (they are
written again, identically, as the run continues).
"""

import json
import shutil
from pathlib import Path

from keras_gpt.files import atomic_write

SET_UP = ("tokenizer", "config.json", "run.json")


class RunDir:
    """The state of a run directory (see the module docstring).

    Attributes:
        path: The directory.
        kind: "new" (absent or empty), "unfinished" (set-up interrupted),
            "foreign" (files, but not a keras-gpt run), "no_checkpoint"
            (set up, nothing trained kept) or "checkpointed".
    """

    def __init__(self, path):
        self.path = Path(path)
        self.kind = self._kind()

    def _kind(self):
        if not self.path.exists():
            return "new"
        if not self.path.is_dir():
            return "foreign"
        names = {p.name for p in self.path.iterdir()}
        if not names:
            return "new"
        if "run.json" in names:
            return ("checkpointed" if "model.keras" in names
                    else "no_checkpoint")
        ours = {n for n in names if n in SET_UP or n.startswith(".tmp-")}
        return "unfinished" if ours == names else "foreign"

    @classmethod
    def inspect(cls, path):
        return cls(path)

    # Starting and resuming ---------------------------------------------------

    def check_new(self):
        """Raises unless a new run may start here; clears an unfinished
        set-up. Returns whether it did."""
        if self.kind == "new":
            return False
        if self.kind == "unfinished":
            shutil.rmtree(self.path)
            self.kind = "new"
            return True
        where = self.path
        if self.kind == "foreign":
            raise ValueError(f"{where} already holds files that are not a "
                             "keras-gpt run: choose another --out.")
        if self.kind == "no_checkpoint":
            raise ValueError(
                f"{where} holds a run stopped before its first checkpoint: "
                f"`keras-gpt train --out {where} --resume` starts it again "
                "from step 0 with its stored options; or choose another "
                "--out (or delete it) for a run with other options.")
        raise ValueError(
            f"{where} already holds a run (checkpoint at step "
            f"{self.checkpoint_step()}): continue it with --resume, or "
            "choose another --out.")

    def check_resumable(self):
        """Raises unless `--resume` can continue this directory."""
        if self.kind in ("new", "foreign"):
            what = ("does not exist" if not self.path.exists() else
                    "is empty" if self.kind == "new" else "has no run.json")
            raise FileNotFoundError(f"Nothing to resume in {self.path}: it "
                                    f"{what} (start a run without --resume).")
        if self.kind == "unfinished":
            raise FileNotFoundError(
                f"Nothing to resume in {self.path}: the run was stopped while "
                "it was being set up (no run.json); start it again without "
                "--resume (the leftovers are cleared).")

    def stored_options(self):
        path = self.path / "run.json"
        try:
            return json.loads(path.read_text())
        except ValueError as error:  # damaged by hand or another tool
            raise ValueError(f"{path} is not valid JSON ({error}): restore "
                             "it, or start a new run with another --out."
                             ) from None

    def clean_leftovers(self):
        """Removes the temporary files a killed writer left."""
        for path in self.path.glob(".tmp-*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # What the checkpoint holds ---------------------------------------------

    def checkpoint_step(self):
        """The step of `model.keras` as state.json or metrics record it
        (None without a checkpoint); the loaded optimizer is the authority
        when training resumes."""
        if not (self.path / "model.keras").is_file():
            return None
        try:
            return int(json.loads((self.path / "state.json").read_text())[
                "step"])
        except (OSError, ValueError, KeyError, TypeError):
            rows = self.metrics()
            return rows[-1]["step"] if rows else None

    def metrics(self):
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a row cut by a kill
                break
        return rows

    def wall_s(self, step):
        """Seconds the run had spent when it reached `step`."""
        if step == 0:
            return 0.0
        try:
            state = json.loads((self.path / "state.json").read_text())
            if state.get("step") == step:
                return float(state["wall_s"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        rows = [r for r in self.metrics() if r.get("step") == step]
        return float(rows[-1]["wall_s"]) if rows else 0.0

    def truncate_metrics(self, step):
        """Drops `metrics.jsonl` rows past `step` (or cut by a kill)."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return
        rows = self.metrics()
        kept = [r for r in rows if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if text != path.read_text():
            atomic_write(path, text)

    def after_interrupt(self):
        """One line on what an interrupted run left, and how to go on."""
        here = RunDir(self.path)  # as it is now
        resume = f"keras-gpt train --out {self.path} --resume"
        if here.kind == "checkpointed":
            return (f"Interrupted: {self.path} holds the checkpoint of step "
                    f"{here.checkpoint_step()}; continue with {resume}")
        if here.kind == "no_checkpoint":
            return (f"Interrupted before the first checkpoint: {resume} "
                    "starts the run again from step 0.")
        return ("Interrupted before the first checkpoint: nothing was kept "
                f"in {self.path}; run the same command to start again.")

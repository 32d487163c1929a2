import io

import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.commands.main import main
from keras_gpt.tokenizers.simple import ByteTokenizer

# The command's wiring and checks; the report's numbers are tested on every
# backend in tests/interpret/test_report.py.
pytestmark = pytest.mark.backend_independent


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layers=1,
                  n_heads=2)).save(run / "model.keras")
    ByteTokenizer().save(run / "tokenizer")
    return run


def test_explain_writes_the_report(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, from another folder
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))  # "" once stripped
    assert main(["explain", str(run_dir), "--out", "report"]) == 2
    assert "the prompt is empty" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["explain", str(run_dir), "--out", "report", "--heads",
                 "2"]) == 0
    assert capsys.readouterr().out.strip() == "report/report.html"
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "attention.png").is_file()
    assert "hello" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--prompt", "hi", "--top-k", "0"], "--top-k: 0 is out of range: it "
                                          "must be >= 1"),
    (["--prompt", "hi", "--heads", "-1"], "--heads: -1 is out of range"),
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "x" * 17], "17 tokens long; the model's context holds at "
                             "most 16"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, capsys, args, message):
    assert main(["explain", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert err.startswith("keras-gpt explain: error: ")
    assert not (run_dir / "explain").exists()


def test_missing_run_and_out_file_are_refused(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    (tmp_path / "run").mkdir()
    assert main(["explain", str(tmp_path / "run"), "--prompt", "hi",
                 "--out", str(tmp_path / "f")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err

"""The CLI framework: atomic output folders, run.json, one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

import cryolab.cli as cli


@pytest.fixture
def fake_cli(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {"writer": "fake_commands.writer"})
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    return cli


def test_success_writes_outputs_and_run_json(fake_cli, tmp_path):
    out = tmp_path / "out"
    assert fake_cli.main(["writer", "hello", "-o", str(out)]) == 0
    assert (out / "a.txt").read_text() == "hello"
    assert (out / "sub" / "b.txt").read_text() == "b"
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "cryolab writer"
    assert record["arguments"]["input"] == "hello"
    assert record["cryolab_version"]
    assert record["started"] <= record["finished"]
    # no staging folders left behind
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("mode", ["input", "missing"])
def test_bad_input_is_one_line_exit_2_and_no_output(fake_cli, tmp_path, capsys, mode):
    out = tmp_path / "out"
    assert fake_cli.main(["writer", "thing.mrc", "--fail", mode, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab writer: error: ")
    assert "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_are_kept_when_a_rerun_fails(fake_cli, tmp_path):
    out = tmp_path / "out"
    fake_cli.main(["writer", "first", "-o", str(out)])
    fake_cli.main(["writer", "second", "--fail", "input", "-o", str(out)])
    assert (out / "a.txt").read_text() == "first"


def test_console_script_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "cryolab.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert name in result.stdout

"""The README's promises: its Python example runs, its commands name real entry points."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "->" in capsys.readouterr().out


def test_readme_commands_match_ci():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run the README's test command"
    assert "lstmlab train multiplication" in commands[0]


def test_readme_names_every_reproduction_and_only_those():
    from lstmlab import reproduce

    row = next(ln for ln in README.read_text().splitlines() if "lstmlab reproduce NAME" in ln)
    named = set(re.findall(r"`([a-z]+\d{4})`", row))
    assert named == set(reproduce.load_all()), named


def test_readme_test_command_shows_progress_per_file():
    """The README promises the default run names each test file as it starts, with its share
    done: its pytest command (less the interpreter path), run on one small file, prints both."""
    import subprocess
    import sys

    command = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)[1]
    args = command.rsplit("-m pytest", 1)[1].split()
    target = "tests/test_readme.py::test_readme_commands_match_ci"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", target],
        cwd=README.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^tests/test_readme\.py \.\s+\[100%\]$", done.stdout, flags=re.M), done.stdout

"""Every command and code block of README.md runs.

Fenced ``python`` blocks are run as scripts; in ``console`` blocks each line
starting with ``$ `` is a shell command (the other lines show output), and in
``bash``/``sh`` blocks every line is. All of them run in document order in one
temporary directory, so a block may use files an earlier one made. ``pip
install`` steps are not run (CI runs them itself before the tests); what
follows them on the same line (``pip install . && dnnblocks train``) is, except
the test command itself. The directory holds a copy of ``examples/``, so
``python examples/...`` works there as in the repository root. A block preceded by ``<!-- readme-test: skip ... -->``
is not run; the comment says why. For a block preceded by ``<!-- readme-test:
check output -->`` the output lines the README shows must be exactly what the
commands print.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip\b")
CHECK_MARK = re.compile(r"<!--\s*readme-test:\s*check output\s*-->")
TEST_COMMAND = "python -m pytest"


def parse_blocks(text):
    """Fenced blocks as dicts: language, first line number, code, skip flag."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, language = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        blocks.append({
            "language": language,
            "line": start + 1,
            "code": "\n".join(lines[start + 1:j]) + "\n",
            "skip": bool(SKIP_MARK.search(previous)),
            "check_output": bool(CHECK_MARK.search(previous)),
        })
        i = j + 1
    return blocks


def shell_commands(block):
    """The commands of a console/bash block, pip-install steps removed."""
    commands, pending = [], None
    for line in block["code"].splitlines():
        if pending is None:
            if block["language"] == "console":
                if not line.startswith("$ "):
                    continue  # output shown in the README
                line = line[2:]
            pending = ""
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        command, pending = (pending + line.strip()).strip(), None
        if not command or command.startswith("#"):
            continue
        steps = [s.strip() for s in command.split("&&")]
        steps = [s for s in steps if "pip install" not in s and not s.startswith(TEST_COMMAND)]
        if steps:
            commands.append(" && ".join(steps))
    return commands


BLOCKS = [b for b in parse_blocks(README.read_text(encoding="utf-8"))
          if b["language"] in ("python", "console", "bash", "sh")]


def _environment():
    env = dict(os.environ)
    # The interpreter running the tests, and the console scripts installed with it.
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join(folders + [env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One working directory for the whole README, and which blocks have run.

    The directory holds a copy of examples/, as the repository root does, so
    that the README's ``python examples/...`` commands run there.
    """
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(README.parent / "examples", folder / "examples")
    return {"dir": folder, "done": set(), "failed": set(), "env": _environment()}


def _run_block(index, session):
    block = BLOCKS[index]
    if block["skip"]:
        return
    where = f"README.md line {block['line']}"
    if block["language"] == "python":
        proc = subprocess.run([sys.executable, "-c", block["code"]], cwd=session["dir"],
                              env=session["env"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{where}: python block failed:\n{proc.stdout}\n{proc.stderr}"
        return
    printed = []
    for command in shell_commands(block):
        # "python" in the README is this interpreter (its folder is first on PATH).
        proc = subprocess.run(command, shell=True, cwd=session["dir"], env=session["env"],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"{where}: `{command}` exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        assert "Traceback" not in proc.stderr, f"{where}: `{command}`:\n{proc.stderr}"
        printed += (proc.stdout + proc.stderr).splitlines()
    if block["check_output"]:
        shown = [line for line in block["code"].splitlines() if line and not line.startswith("$ ")]
        assert printed == shown, f"{where}: the README shows\n{shown}\nbut the commands print\n{printed}"


@pytest.mark.parametrize("index", range(len(BLOCKS)),
                         ids=[f"line{b['line']}-{b['language']}" for b in BLOCKS])
def test_readme_block_runs(index, session):
    if BLOCKS[index]["skip"]:
        pytest.skip("marked <!-- readme-test: skip --> in README.md")
    # Earlier blocks first, once each: they may make files this one uses. Their
    # own failures are reported by their own tests, not again here.
    for earlier in range(index):
        if earlier not in session["done"] and earlier not in session["failed"]:
            try:
                _run_block(earlier, session)
            except Exception:
                session["failed"].add(earlier)
            else:
                session["done"].add(earlier)
    try:
        _run_block(index, session)
    except BaseException:
        session["failed"].add(index)
        raise
    session["done"].add(index)


def test_readme_opens_with_the_two_commands():
    shell = [b for b in BLOCKS if b["language"] in ("console", "bash", "sh")]
    first_two = [shell[0]["code"], shell[1]["code"]]
    assert "pip install . && dnnblocks train" in first_two[0]
    assert 'pip install ".[test]" && python -m pytest' in first_two[1]
    assert shell[0]["line"] < 20 and shell[1]["line"] < 30
    # CI runs exactly the README's test command.
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install ".[test]"' in ci and "\npython -m pytest" in ci


def test_every_shell_command_is_run_or_explicitly_skipped():
    commands = [c for b in BLOCKS if b["language"] != "python" for c in shell_commands(b)]
    assert any(c.startswith("dnnblocks train") for c in commands)
    for command in ("predict", "evaluate", "bench"):
        assert any(c.startswith(f"dnnblocks {command}") for c in commands), command
    assert not any(TEST_COMMAND in c for c in commands)


def test_parser_on_a_sample():
    text = ("x\n```console\n$ pip install . && dnnblocks train\ntrain accuracy: 1\n"
            "$ dnnblocks predict m.npz \\\n    d.csv\n```\n<!-- readme-test: skip slow -->\n"
            "```python\nprint(1)\n```\n")
    blocks = parse_blocks(text)
    assert [b["language"] for b in blocks] == ["console", "python"]
    assert shell_commands(blocks[0]) == ["dnnblocks train", "dnnblocks predict m.npz d.csv"]
    assert blocks[1]["skip"] and not blocks[0]["skip"] and blocks[1]["line"] == 9

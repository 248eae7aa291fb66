"""The README's Python quick start runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text.split("## Python quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README has no Python quick start"
    return "\n".join(blocks)


def test_the_readme_quick_start_runs(tmp_path: Path) -> None:
    code = quick_start()
    assert "import netbus" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "4"
    assert len(lines) == 5


def test_the_examples_run(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    quick = subprocess.run([sys.executable, str(examples / "quickstart.py")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert quick.returncode == 0, quick.stderr
    assert quick.stdout.splitlines()[-1] == "4 0"
    consumer = subprocess.run([sys.executable, str(examples / "consumer.py"), str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
    assert consumer.returncode == 0, consumer.stderr
    out = consumer.stdout.splitlines()
    assert out[0].startswith("[{'order': 3}]")
    assert len([line for line in out if "{'order':" in line]) == 11
    assert "cursor saved: True" in out and out[-1].startswith("refused: invalid cursor")

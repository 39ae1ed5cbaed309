"""The README's client example works when pasted (against the test node instead of :7700)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_client_example_runs_as_written(node_address: str) -> None:
    text = README.read_text()
    section = text.split("## The client in five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the README has no python example under its client heading"
    source = code.group(1)
    assert '"127.0.0.1:7700"' in source
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(source.replace("127.0.0.1:7700", node_address), str(README), "exec"), {})  # noqa: S102
    assert output.getvalue().strip() == "7"

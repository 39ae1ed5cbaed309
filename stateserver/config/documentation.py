"""The settings table that docs/configuration.md embeds; ``python -m stateserver.config`` prints it."""
from __future__ import annotations

from stateserver.config.schema import SETTINGS_TABLE


def render_settings_table() -> str:
    """The Markdown table of all settings that docs/configuration.md embeds."""
    lines = ["| setting | flag | environment variable | default | meaning |",
             "| --- | --- | --- | --- | --- |"]
    for row in SETTINGS_TABLE:
        lines.append(f"| `{row.name}` | `{row.flag}` | `{row.env_var}` | `{row.default}` | {row.meaning} |")
    return "\n".join(lines) + "\n"

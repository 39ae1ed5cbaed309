"""``python -m stateserver.config`` prints the settings table that docs/configuration.md embeds."""
from stateserver.config.documentation import render_settings_table

print(render_settings_table(), end="")

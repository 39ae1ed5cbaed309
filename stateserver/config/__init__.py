"""A node's settings: one frozen value, loaded from flags, environment, a TOML file and defaults.

Precedence, highest first: command-line flags, ``STATESERVER_<SETTING>`` environment variables,
the TOML config file, the defaults declared on ``Settings``. ``snapshot_options`` is merged key by
key across those sources, so a config file can name the endpoint while the environment carries the
credentials.

Everything is validated at load, and every problem is reported at once in one ``SettingsError``
naming where the bad value came from: a node that starts half-configured fails later, on another
machine, far from the cause.

    schema          the ``Settings`` fields: parser, meaning, default; ``SETTINGS_TABLE``
    parsers         raw value (flag, environment string, TOML value) -> value
    sources         flags, environment, TOML file, nodes file; ``load_settings``
    documentation   the Markdown table ``docs/configuration.md`` embeds

``docs/configuration.md`` embeds ``render_settings_table()``; regenerate it with
``python -m stateserver.config``.
"""
from stateserver.config.documentation import render_settings_table
from stateserver.config.parsers import parse_node_list
from stateserver.config.schema import SETTINGS_TABLE, SettingInfo, Settings, SettingsError
from stateserver.config.sources import (
    CONFIG_ENV_VAR, add_settings_arguments, load_settings, read_nodes_file, settings_from_args,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "SETTINGS_TABLE",
    "SettingInfo",
    "Settings",
    "SettingsError",
    "add_settings_arguments",
    "load_settings",
    "parse_node_list",
    "read_nodes_file",
    "render_settings_table",
    "settings_from_args",
]

"""Node settings: schema, sources (flags, environment, TOML) and the generated documentation."""

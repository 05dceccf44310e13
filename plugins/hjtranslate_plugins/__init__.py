"""Built-in plugins of hjtranslate, registered through entry points in pyproject.toml."""

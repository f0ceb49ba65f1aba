"""One module per command. Each has `ORDER` (its place in --help) and `register(app)`; cli/__init__.py
finds them with pkgutil."""

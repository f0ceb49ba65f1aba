"""Where the commands print: reports to stdout, errors and notes to stderr."""

from rich.console import Console

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

"""inferwatch's reverse proxy and command line."""

from ._cli import main

__all__ = ["main"]

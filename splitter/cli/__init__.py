"""The `splitter` command line (see `splitter.cli.app`)."""

from splitter.cli.app import main

__all__ = ["main"]

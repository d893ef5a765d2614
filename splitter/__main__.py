"""`python -m splitter`: the same as the `splitter` command."""

from splitter.cli import main

raise SystemExit(main())

"""`python -m lkps`, the same as the `lkps` command."""

from lkps.cli import main

main()

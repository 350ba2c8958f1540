"""`python -m edgec` runs the command line."""

from edgec.cli import main

main()

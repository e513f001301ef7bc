"""``python -m regiongate`` runs the command line."""

from regiongate.cli import main

main()

"""``python -m inferwatch`` runs the ``inferwatch`` command line."""

from ._cli import main

main(prog_name="inferwatch")

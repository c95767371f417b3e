"""``python -m inferwatch`` runs the ``inferwatch`` command line."""

from .sidecar._cli import main

main(prog_name="inferwatch")

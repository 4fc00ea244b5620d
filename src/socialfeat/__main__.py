"""`python -m socialfeat` (and `torchrun -m socialfeat`) run the CLI."""

from socialfeat.cli import main

main()

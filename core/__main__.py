"""``python -m defectlab``: the command line, also for ``torchrun -m defectlab train CONFIG``."""

from defectlab.cli.main import main

main()

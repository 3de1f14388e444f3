"""`python -m kernelfit.cli ...`: the `kernelfit` command without its entry-point script."""

import sys

from kernelfit.cli import main

sys.exit(main())

"""`python -m kernelfit.cli ...`: the `kernelfit` command without its entry-point script."""

import sys

from . import main

sys.exit(main())

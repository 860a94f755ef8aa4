"""`python -m monosemantic` runs the command line."""

import sys

from monosemantic.cli import main

sys.exit(main())

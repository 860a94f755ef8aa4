"""`python -m monosemantic.cli` runs the command line, as `python -m monosemantic` does."""

import sys

from monosemantic.cli.main import main

sys.exit(main())

"""`python -m monosemantic.cli` runs the command line, as `python -m monosemantic` does."""

import sys

from monosemantic.cli.entry import main

sys.exit(main())

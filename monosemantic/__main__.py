"""`python -m monosemantic` runs the command line."""

import sys

from monosemantic.cli.entry import main

sys.exit(main())

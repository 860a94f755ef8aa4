"""`python -m monosemantic` runs the command line."""

import sys

from monosemantic.cli.main import main

sys.exit(main())

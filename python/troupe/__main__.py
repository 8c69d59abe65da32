"""`python -m troupe`: the job command line (see troupe.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m mta ...` is the `mta` command."""

import sys

from mta.cli import main

sys.exit(main())

"""`python -m mta.train ...`, the module torchrun launches: `torchrun --nproc-per-node K -m mta.train ...`."""

import sys

from mta.cli.train import main

sys.exit(main())

"""``python -m coreml export|verify|cost``: see coreml/cli.py."""

import os
import sys

# The interpreter multiplies tiny matrices (one 100 ms chunk at a time): BLAS threads only add
# contention, which on a busy machine made each chunk 20x slower. Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from coreml.cli import main

sys.exit(main())

"""``python -m coreml export|verify|cost``: see coreml/cli.py."""

import logging
import os
import sys
import warnings

# The interpreter multiplies tiny matrices (one 100 ms chunk at a time): BLAS threads only add
# contention, which on a busy machine made each chunk 20x slower. Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# coremltools announces on import that Core ML prediction is unavailable off macOS and that this torch
# is newer than it was tested with; verify says the former once, the tests cover the latter.
logging.getLogger("coremltools").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="coremltools")

from coreml.cli import main  # noqa: E402

sys.exit(main())

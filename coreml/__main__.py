"""``python -m coreml export|verify|cost``: see coreml/cli.py."""

import sys

from coreml.cli import main

sys.exit(main())

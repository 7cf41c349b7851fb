"""``python -m pipesim``."""

import sys

from pipesim.cli import main

sys.exit(main())

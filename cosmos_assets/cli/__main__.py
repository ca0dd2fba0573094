"""``python -m cosmos_assets.cli``."""

import sys

from cosmos_assets.cli import main

sys.exit(main())

"""``python -m cosmos_assets.cli``."""

import sys

from cosmos_assets.cli import main

if __name__ == "__main__":  # importing the module (pkgutil walks the package) runs nothing
    sys.exit(main())

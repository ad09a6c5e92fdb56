"""``python -m optimist``: the ``optimist`` command."""

import sys

from optimist.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m dnnblocks``: the same as the ``dnnblocks`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

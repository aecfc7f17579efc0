"""`python -m relay` is the `relay` command."""

import sys

from .cli import main

# Guarded: a spawned child (the recording finishers) imports this module as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())

"""Entry point of the packaged ATM (PyInstaller needs a script, not ``-m``)."""

import sys

from atm_gui.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bank_server``: see ``bank_server.cli``."""

import sys

from bank_server.cli import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

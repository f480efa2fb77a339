"""``python -m featherface``: the command-line interface."""

import sys

from featherface.cli import main

sys.exit(main())

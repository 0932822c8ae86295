"""``python -m lstmlab`` is the ``lstmlab`` command."""

import sys

from lstmlab.cli import main

sys.exit(main())

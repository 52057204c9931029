"""``python -m ios_tvm``: the command line (see :mod:`ios_tvm.cli`)."""

import sys

from .cli import main

sys.exit(main())

"""`python -m mlws ...`: the same as the installed `mlws` script."""

import sys

from mlws.cli import main

sys.exit(main())

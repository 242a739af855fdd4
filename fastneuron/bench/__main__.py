"""``python -m fastneuron.bench``: run the benchmark and exit with its status."""

import sys

from . import main

sys.exit(main())

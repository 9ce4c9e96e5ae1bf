"""``python -m bench``: the class-incremental benchmark (the command line of :mod:`bench.run`)."""

import sys

from bench.run import main

sys.exit(main())

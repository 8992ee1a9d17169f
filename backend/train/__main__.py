"""``python -m backend.train cache|iscn|mrn|assemble|selector``."""

import sys

from backend.train.cli import main

sys.exit(main())

"""``python -m backend.eval``: simulated-user evaluation (see `backend.eval.run`)."""

import sys

from backend.eval.run import main

sys.exit(main())

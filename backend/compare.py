"""``python -m backend.compare``: kept as the documented spelling of `backend.eval.compare`."""

import sys

from backend.eval.compare import main

if __name__ == "__main__":
    sys.exit(main())

"""Write tests/fixtures/person_nets/astronaut-pair.jpg: two people side by side, from public-domain material only.

samples/astronaut.png (NASA photograph of Eileen Collins, public domain) is cut to its left 330 columns (the person),
mirrored on the left half and kept as is on the right half, so the two people meet at the seam: neighbours whose
masks the finder has to keep apart. Scaled to 600 px wide, JPEG quality 85 (~50 KB).

    .venv/bin/python tools/person_models/make_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "person_nets" / "astronaut-pair.jpg"
KEEP_COLUMNS = 330
WIDTH = 600


def main() -> None:
    bgr = cv2.imread(str(REPO / "samples" / "astronaut.png"), cv2.IMREAD_COLOR)[:, :KEEP_COLUMNS]
    pair = np.hstack([bgr[:, ::-1], bgr])
    h, w = pair.shape[:2]
    pair = cv2.resize(pair, (WIDTH, round(h * WIDTH / w)), interpolation=cv2.INTER_AREA)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT), pair, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(OUT, OUT.stat().st_size, "bytes", pair.shape)


if __name__ == "__main__":
    main()

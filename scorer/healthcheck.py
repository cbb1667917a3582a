"""`python -m scorer.healthcheck`: exit 0 if this host's scorer answers /healthz.

The container image's HEALTHCHECK; it imports nothing heavy, so a check costs
milliseconds, not a model load.
"""

from __future__ import annotations

import os
import sys
import urllib.request

# Far above a loopback round trip, below the image's HEALTHCHECK --timeout.
TIMEOUT_S = 2.0


def main() -> int:
    port = os.environ.get("TXRISK_HTTP_PORT", "8000")
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

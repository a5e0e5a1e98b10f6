import signal
import sys

# A worker stopped while still starting up has nothing to finish: exit cleanly. The running
# worker replaces this handler with one that lets the current pass complete.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

import asyncio  # noqa: E402
import logging  # noqa: E402

from api.workers.runner import main  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
asyncio.run(main())

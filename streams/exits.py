"""How the worker stops by itself when it cannot go on without losing or misreporting events."""

from __future__ import annotations

import logging
import os
from typing import NoReturn

log = logging.getLogger(__name__)

# Exit codes (sysexits.h): a batch the worker could not complete, and a configuration that
# cannot work (a wrong password, an unknown database, a failing migration).
EXIT_BATCH_NOT_COUNTED = 70
EXIT_CONFIG = 78


def stop_worker(message: str, exc: BaseException, code: int = EXIT_BATCH_NOT_COUNTED) -> NoReturn:
    """Exit at once, acknowledging nothing more.

    Not Faust's graceful stop: its supervisor restarts a crashed agent, which reads on from
    where the crashed one stopped, so acknowledging later messages would commit offsets past
    the batch that was not counted. An exit is a crash the service already survives (the
    SIGKILL tests): whatever was not acknowledged is read again after the restart.
    """
    log.critical("worker stopping: %s error=%r", message, exc, exc_info=exc)
    logging.shutdown()
    os._exit(code)

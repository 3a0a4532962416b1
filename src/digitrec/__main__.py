import os
import sys

from digitrec.cli import main

status = main()
if "digitrec.distributed" in sys.modules and sys.modules["digitrec.distributed"].PROCESSES.world_size > 1:
    # One of several training processes: its process group is gone and the master has written every
    # file, so nothing is left to do. The interpreter's own teardown can still trip over torch's
    # communication threads now and then (an abort after a finished training, which the launcher would
    # report as a failure), so the process leaves without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)

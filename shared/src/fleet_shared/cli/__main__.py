"""`python -m fleet_shared.cli ...`, the same as `fleet ...`."""

import sys

from fleet_shared.cli import main

sys.exit(main())

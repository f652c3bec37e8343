"""``python3 -I -m gatekeeper.execgate``: the ForceCommand entry point (see docs/openssh.md)."""

import sys

from gatekeeper.execgate.program import main

sys.exit(main())

"""``python -m cxrkit.cli`` (used by torchrun for multi-GPU training)."""

import sys

from cxrkit.cli import main

sys.exit(main())

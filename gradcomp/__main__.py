"""``python -m gradcomp``: the ``gradcomp`` command."""

import sys

from .cli import main

sys.exit(main())

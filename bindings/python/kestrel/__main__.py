"""``python -m kestrel module:app``: see :mod:`kestrel._cli`."""

import sys

from ._cli import main

sys.exit(main())

"""``python -m napari_mprnet``: the same as the ``napari-mprnet`` command."""

import sys

from .cli import main

sys.exit(main())

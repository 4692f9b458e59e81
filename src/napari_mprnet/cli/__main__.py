"""``python -m napari_mprnet.cli``: the same as the ``napari-mprnet`` command."""

import sys

from . import main

sys.exit(main())

"""Run ipvsman as `python -m ipvsman`."""

import sys

from ipvsman.cli import main

sys.exit(main())

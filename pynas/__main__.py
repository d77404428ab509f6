import sys

from pynas.cli import main

sys.exit(main())

import sys

from cryolab.cli import main

sys.exit(main())

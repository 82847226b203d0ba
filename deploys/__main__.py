import sys

from deploys.cli import main

sys.exit(main())

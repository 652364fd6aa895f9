import sys

from ftops_cli import main

sys.exit(main())

import sys

from digan.cli import main

sys.exit(main())

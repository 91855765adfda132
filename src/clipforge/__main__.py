import sys

from clipforge.cli.main import main

sys.exit(main())

import sys

from hpcasync.cli.main import main

sys.exit(main())

"""python -m raftkv.cli: raftkvctl."""
import sys

from raftkv.cli.ctl import main

sys.exit(main())

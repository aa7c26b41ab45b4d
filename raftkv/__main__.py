"""`python -m raftkv`: run a cluster member (see raftkv.api.serve)."""
import sys

from raftkv.api.serve import main

sys.exit(main())

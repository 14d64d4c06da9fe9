"""`python -m genq` is the `genq` command."""
import sys

from genq.cli.main import main

sys.exit(main())

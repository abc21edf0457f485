import sys

from budgetd.cli import main

sys.exit(main())

import sys

from fetaliqa_core.cli import main

sys.exit(main())

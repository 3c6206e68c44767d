import sys

from llavaguard.cli import main

sys.exit(main())

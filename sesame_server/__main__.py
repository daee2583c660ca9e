import sys

from sesame_server.cli import main

sys.exit(main())

import sys

from pbx_bridge.cli import main

sys.exit(main())

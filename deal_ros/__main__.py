import sys

from deal_ros.cli import main

sys.exit(main())

import sys

from consul_agents.cli import main

sys.exit(main())

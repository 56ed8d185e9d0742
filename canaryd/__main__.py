"""Allow ``python -m canaryd``."""

from canaryd.cli.commands import main

raise SystemExit(main())

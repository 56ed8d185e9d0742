"""Allow ``python -m canaryd``."""

from canaryd.cli import main

raise SystemExit(main())

"""Allow ``python -m authbridge``."""

from authbridge.cli import main

raise SystemExit(main())

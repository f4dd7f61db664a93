"""``python -m lungseg`` (and ``torchrun -m lungseg``) runs the CLI."""

from lungseg.cli import main

raise SystemExit(main())

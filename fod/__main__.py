from fod.cli import main

raise SystemExit(main())

from settle.cli import main

raise SystemExit(main())

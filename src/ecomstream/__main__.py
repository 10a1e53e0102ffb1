from ecomstream.cli import main

raise SystemExit(main())

from splitter.cli.app import main

raise SystemExit(main())

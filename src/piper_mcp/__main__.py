from piper_mcp.cli import main

raise SystemExit(main())

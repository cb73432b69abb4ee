from kbert_tui.cli import main

raise SystemExit(main())

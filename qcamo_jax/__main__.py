from qcamo_jax.cli import main

raise SystemExit(main())

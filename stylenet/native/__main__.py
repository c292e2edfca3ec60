"""``python -m stylenet.native``: build the native kernels now and check them (``stylenet.native``)."""

from stylenet.native import main

raise SystemExit(main())

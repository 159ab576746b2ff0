"""``python -m parsim.calibrate`` (and ``torchrun ... -m parsim.calibrate``)."""
from .cli import main

raise SystemExit(main())

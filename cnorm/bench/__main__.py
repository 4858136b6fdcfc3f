"""``python -m cnorm.bench``: the benchmark report."""
import sys

from .report import main

sys.exit(main())

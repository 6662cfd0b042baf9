"""python -m persona_bench.report RUN_DIR [RUN_DIR ...]: see persona_bench/report/write.py."""

import sys

from persona_bench.report.write import main

sys.exit(main())

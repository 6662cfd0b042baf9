"""The report: the paper's questions answered for one or many runs, from saved results only
(report.json, report.html, figures/). The evaluated model is never loaded here.

    python -m persona_bench.report RUN_DIR [RUN_DIR ...] [--out DIR]
    write_report([run_dir], out, Options(n_boot=2000, seed=0, similarity=True))

analyse.py computes every table; figures.py draws one model's figures and cross_figures.py those that
set the models side by side; tables.py makes a table read (headers, units, small-sample badges);
html.py renders the page and cross_html.py its "Models side by side" section; write.py writes the
files and holds the command line. export_lm_eval.py writes a run in lm-evaluation-harness's
results and samples format (python -m persona_bench.report.export_lm_eval RUN_DIR [OUT_DIR]).
"""

from __future__ import annotations

from persona_bench.report.analyse import Options
from persona_bench.report.write import main, write_report

__all__ = ["Options", "main", "write_report"]

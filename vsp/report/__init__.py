"""The report, above every stage: it reads each stage through that stage's readers.

Modules: the paper's numbers (`paper`), the tables and HTML (`build`), the appendix's per-image
predictions (`explain`), the report as a stage (`stage`) and its settings (`config`).

``vsp.report`` was one module in release 0.1; its names still resolve here (from ``vsp.report.build``) for
one release.
"""

from vsp import forward_names

__getattr__ = forward_names(__name__, "vsp.report.build")

"""`fdm report`: the paper's tables and plots, regenerated from our evaluation records.

Input: every ``runs/<dataset>/<variant>/s<seed>/eval/<kimg>/<sampler>-<nfe>/metrics.json`` of the
profile. Output, per dataset, under ``reports/<dataset>/`` (how to read them: docs/report.md):

- ``fid_vs_mimg.{csv,md,png}``: the report metric against training Mimg at the dataset's main sampler
  and NFE (the paper's FID-vs-training table, ``fdm.paper_results``); per point the mean over training
  seeds, its standard deviation and its 95% Student-t confidence interval (none for one seed);
- ``fid_vs_nfe.{csv,md,png}``: the same against NFE per sampler at the final snapshot (its FID-vs-NFE
  tables);
- ``speedup.{csv,md,png}``: FDM's two claims (about half the training, about 3x fewer steps), measured,
  with one definition for both axes and a percentile bootstrap interval over training seeds.

With ``report.compare_paper`` and the paper's metric, the paper's numbers stand beside ours. The files
are pure functions of the records: byte-identical across reruns, PNGs included, and written atomically.

Modules: `records` (reading metrics.json into records; mean and t interval over seeds), `speedup` (the
speedup definition and its bootstrap: pure), `tables` (rows, CSV and Markdown), `figures` (the plots),
`write` (`write_report`: which files per dataset), `cli` (the click command).
"""

from fdm.report.records import Record, read_records
from fdm.report.write import write_report

__all__ = ["Record", "read_records", "write_report"]

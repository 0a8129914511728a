"""Benchmark runner behind ``graphrec bench`` (protocols of the DGMRec and CI2MG papers).

* :mod:`graphrec.bench.ablations`: the ablation variants (DGMRec Table 4, CI2MG Table 3) as
  config overrides;
* :mod:`graphrec.bench.runner`: plans the runs of a protocol, runs each in its own process
  (so peak RSS is per run), skips runs whose record exists (resume) and writes the report;
* :mod:`graphrec.bench.worker`: trains and measures one run (``python -m graphrec.bench.worker``);
* :mod:`graphrec.bench.report`: ``results.md`` (mean ± std over seeds, cost ratios) and plots.

Nothing here is imported by the rest of graphrec; importing this package is cheap (no torch).
"""

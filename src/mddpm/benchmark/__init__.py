"""``mddpm benchmark``: methods × runs (folds or seeds) × test sets -> Table 1 with p-values.

An *experiment* file (:mod:`~mddpm.benchmark.experiment`) names what runs; for every dataset ×
method × run the benchmark trains, predicts the validation and test splits and evaluates each test
set (:mod:`~mddpm.benchmark.plan`, :mod:`~mddpm.benchmark.runner`), one run at a time in this process or one
submitit job per run (:mod:`~mddpm.benchmark.execute`, :mod:`~mddpm.benchmark.cluster`); then it builds Table 1
(:mod:`~mddpm.benchmark.table`, :mod:`~mddpm.benchmark.statistics`) and writes it with the report
(:mod:`mddpm.report`).

Layout of the output folder (default ``benchmark_out/<experiment name>``)::

    OUT/benchmark.json                              experiment as run, data paths, every stage's status and wall time
    OUT/data/<dataset>/                             a dataset the experiment generates ("synth")
    OUT/runs/<dataset>/<method>/<run>/train/        run folder (mddpm train)
    OUT/runs/<dataset>/<method>/<run>/maps/<split>/ anomaly maps (mddpm predict)
    OUT/runs/<dataset>/<method>/<run>/eval/<test>/  metrics, pr.json, examples/ (mddpm evaluate)
    OUT/runs/<dataset>/<method>/<run>/stages.json   wall time and inputs of each finished stage
    OUT/runs/<dataset>/<method>/<run>/.mddpm.lock   only while a process works on the run (:mod:`~mddpm.folder_lock`)
    OUT/jobs/<date-time>/                           submitit's scripts and logs (:mod:`~mddpm.benchmark.cluster`)
    OUT/table.md, table.csv, table.json             Table 1 (+ every metric, p-values, wall times)
    OUT/report.html                                 the report (mddpm.report)

Resume (the default): a training is skipped when ``train/best.pt`` exists and its ``config.json`` equals
the experiment's config (an interrupted one continues from its last checkpoint); a prediction or
evaluation is skipped when its output exists and was made from the same inputs (weights file, maps).
A run whose saved config differs from the experiment is an error unless ``force`` (then it is
retrained). Without resume every stage runs again (an existing output folder then needs ``force``).

Table 1 (as the paper): per test set, DICE (per-volume Dice at the threshold chosen on the validation
split, default rule) and AUPRC (per-volume average precision), each the mean ± std ACROSS RUNS of the
per-volume means of each run (std: population, ddof 0, as numpy and the published aggregation; the
sample std is in table.json/csv too). p-values: paired Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, two-sided, zero_method "wilcox") of each method against the reference on
per-volume scores, pairs matched by (run, case) and pooled over runs. Pooling repeats each case once per
run, so the pairs are not independent and the p-values are optimistic; they are a screening aid.
"""

DEFAULT_OUT = "benchmark_out"  # the output folder is DEFAULT_OUT/<experiment name> unless given
OLD_DEFAULT_OUT = "benchmarks"  # before: the folder of the speed scripts; a benchmark found there is resumed there

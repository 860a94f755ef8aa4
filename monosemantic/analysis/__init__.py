"""Feature analysis: every latent of a run -> the feature store.

latent_stats.py  streaming per-latent statistics, histograms, top and quantile examples
labels.py        automatic labels with held-out precision and recall
analyze.py       the analysis of a run: model + SAE over a corpus -> store
store.py         the feature store: read features, examples, labels, search (files only)
writer.py        the feature store: write it (SQLite + shards, atomically)
terminal.py      store contents as terminal text (`feature`, `features`, `inspect`)
"""

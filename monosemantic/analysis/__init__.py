"""Feature analysis: every latent of a run -> the feature store.

latent_stats.py  streaming per-latent statistics, histograms, top and quantile examples
labels.py        automatic labels: rules, held-out precision and recall, the label chosen
concepts.py      token roles as concepts; the per-token inputs of the label rules
label_text.py    labels in words and as JSON rules; the multilingual flag
settings.py      AnalyzeConfig: the analysis' settings
analyze.py       the analysis of a run: model + SAE over a corpus -> store
store.py         the feature store: read features, examples, labels, search (files only)
writer.py        the feature store: write it (SQLite + shards, atomically)
integrity.py     the feature store's hashes and checks, damage reported with its repair
terminal.py      store contents as terminal text (`feature`, `features`, `inspect`)
"""

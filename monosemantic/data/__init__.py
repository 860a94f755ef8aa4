"""Data: text in, activation vectors out.

corpora.py       text corpora (the built-in math corpus, .txt / .jsonl, saved datasets), packing with provenance
roles.py         token roles of a .jsonl corpus (field "roles"): the format, tokens' roles
stream.py        model + hookpoint + corpus -> shuffled activation batches with provenance (harvesting)
cache.py         the stream's batches on disk: harvest once, train many SAEs
activations.py   activation files (.npy / .safetensors) and resumable batch iterators over tensors
"""

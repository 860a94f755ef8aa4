"""Training: batches of activations + an SAE -> a trained SAE in a run directory.

trainer.py       Iterator[Tensor] + SAE -> trained SAE, checkpoints, metrics.jsonl (knows no model)
checkpoint.py    atomic, verified training checkpoints and exact resume
data_init.py     initialisation from data: b_dec's geometric median, resampling of dead latents
rundir.py        the run directory: its files, its creation, its lock, its training log
preflight.py     before anything is allocated: is the device there, does the SAE fit in its memory
config.py        RunConfig (data, harvest, SAE options, trainer) and the run files that record it
pipeline.py      train on a model end to end: RunConfig -> harvest -> trainer -> run directory
sweep.py         a grid of SAEs of one hookpoint trained from one pass of activations
"""

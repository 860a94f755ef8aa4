"""Scale-out under torchrun, and several SAEs trained in lockstep.

world.py         the process group: data x latent mesh, collectives, rank-aware batches and SAEs
checkpoint.py    checkpoints written and read by every rank at any world size
sharded.py       a TopK SAE split along d_sae over ranks (latent sharding)
multi_sae.py     several SAEs trained together from one activation stream (hookpoints, sweeps)
"""

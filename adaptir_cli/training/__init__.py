"""Training: adapters on a frozen base (`finetune`) and whole multi-task bases (`pretrain`).

data.py (folders, pairing, the decoded-image cache, size checks) -> sampling.py (seeded crops,
flips and degradations) and inputs.py (what each task trains and validates on) -> loop.py (the
shared loop, with schedule.py, checkpoint.py, batchnorm.py, validation.py, progress.py) <-
finetune.py / pretrain.py (what trains, and the files each writes). docs/training.md has the rest.
"""

"""Slow, obviously-correct numpy reference implementations used as test oracles.

Pure numpy/scipy (plus pydensecrf in :mod:`reference.crf_ref`); nothing here imports torch
or rrm_ops, so the oracles stay independent of the code they check.

Modules:
    lattice_ref      permutohedral lattice filter (Krähenbühl's dense-CRF scheme), DESIGN §5.1
    crf_ref          dense-CRF mean field: pydensecrf wrapper and a lattice_ref version, §5.2
    energy_loss_ref  gated dense-CRF energy loss and its two gradients, §5.3
    mining_ref       reliable region mining (CAM pruning) for one image, §5.4
"""

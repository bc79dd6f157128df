"""Slow, obviously-correct numpy reference implementations used as test oracles.

Pure numpy/scipy (plus pydensecrf in :mod:`reference.crf_ref`); nothing here imports torch
or rrm_ops, so the oracles stay independent of the code they check.

Modules (the section of docs/design.md each one follows after the colon):
    lattice_ref      permutohedral lattice filter (Krähenbühl's dense-CRF scheme): #permutohedral-lattice
    crf_ref          dense-CRF mean field, a pydensecrf wrapper and a lattice_ref version: #dense-crf
    energy_loss_ref  gated dense-CRF energy loss and its two gradients: #dense-energy-loss
    mining_ref       reliable region mining (CAM pruning) for one image: #reliable-region-mining
"""

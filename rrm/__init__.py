"""rrm: the training layer of the RRM toolkit.

Packages, each importing only from those above it:

- ``rrm.utils``: errors, command-line plumbing (the error policy), devices and processes,
  atomic file writes;
- ``rrm.data``: the VOC folder layout, its files, the dataset, transforms, the embedded
  synthetic dataset;
- ``rrm.models``: the networks and their weight files;
- ``rrm.cams``: what CAMs become (the CAM-argmax baseline, RRM's reliable regions);
- ``rrm.evaluation``: metrics, validation, panels, prediction of a split, scoring;
- ``rrm.training``: the configuration, the stages, the loop and the two-step run.

The command lines are thin entry points on top: ``python -m rrm.train``, ``rrm.infer``,
``rrm.evaluate``, ``rrm.pseudo_labels``, ``rrm.data.check``, ``rrm.data.synthetic`` and
``rrm.models.mxnet_params``.

Importing ``rrm`` loads nothing else; the compiled kernels (``rrm_ops``) are loaded by the
modules that use them (``rrm.cams``, prediction, training).
"""

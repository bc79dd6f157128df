"""Drop-in replacements for the native modules weakly supervised segmentation code imports.

* :mod:`rrm_ops.compat.pydensecrf` -- pydensecrf's ``densecrf`` and ``utils`` API on rrm's
  permutohedral lattice and mean-field kernels;
* :mod:`rrm_ops.compat.bilateralfilter` -- the ``bilateralfilter`` / ``bilateralfilter_batch``
  functions of rloss's SWIG module, with their signatures and in-place output.

Only the import line of such code changes; docs/compat.md lists what is and is not supported.
"""

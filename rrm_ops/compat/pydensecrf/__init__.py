"""pydensecrf's Python API on rrm_ops: ``import rrm_ops.compat.pydensecrf.densecrf as dcrf``
replaces ``import pydensecrf.densecrf as dcrf`` (and ``utils`` likewise)."""

from rrm_ops.compat.pydensecrf import densecrf, utils

__all__ = ["densecrf", "utils"]

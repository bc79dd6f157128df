"""The arguments a direct ``torch.ops`` call of the composite ops needs besides its inputs: their
schemas give no argument a default (the typed wrappers own those), so a test states them all.
Pass them by name: ``torch.ops.rrm_ops.dense_crf(scores, images, **DENSE_CRF)``."""

from rrm_ops import TRAINING_CRF

# RRM's training CRF, without a label mask, as dense_crf's keyword arguments.
DENSE_CRF = dict(unary=None, **TRAINING_CRF.as_kwargs(), label_mask=None)

# reliable_region_labels' keyword arguments as rrm_ops.reliable_region_labels passes them by
# default, with Q returned, in the schema's order (some tests pass the values positionally).
MINING = dict(alpha_low=4.0, alpha_high=32.0, **TRAINING_CRF.as_kwargs(), cam_alpha=32.0, fg_quantile=0.6,
              cam_floor=0.1, bg_sure=0.8, crf_sure=0.8, ignore_index=255, return_q=True)

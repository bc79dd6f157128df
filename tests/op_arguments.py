"""The arguments a direct ``torch.ops`` call of the composite ops needs besides its inputs: their
schemas give no argument a default (the typed wrappers own those), so a test states them all.
Pass them by name: ``torch.ops.rrm_ops.dense_crf(scores, images, **DENSE_CRF)``."""

# RRM's training CRF, without a label mask, as dense_crf's keyword arguments.
DENSE_CRF = dict(unary=None, n_iter=10, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=80.0,
                 bilateral_srgb=13.0, bilateral_compat=10.0, label_mask=None)

# reliable_region_labels' keyword arguments as rrm_ops.reliable_region_labels passes them by
# default, with Q returned.
MINING = dict(alpha_low=4.0, alpha_high=32.0, cam_alpha=32.0, fg_quantile=0.6, cam_floor=0.1, bg_sure=0.8,
              crf_sure=0.8, ignore_index=255, compact_labels=None, return_q=True)

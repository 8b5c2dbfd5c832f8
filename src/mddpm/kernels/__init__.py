"""Hand-written compiled kernels (numba, CPU) behind the evaluation protocol: the exact 3-D median filter
(:mod:`.median`, its networks and fused pass) and single passes over pooled scores (:mod:`.score_passes`).
They are here, apart from the protocol modules, because they are about speed only: each equals a
library reference (``scipy.ndimage.median_filter``, ``numpy.histogram``) that the tests compare with."""

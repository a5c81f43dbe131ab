"""Restoration of damaged heads (``digan-bench restore`` and the ``restore`` metric).

:mod:`digan.restore.core`: masked teacher inversion, the student's 3D estimate and symmetric
completion in the canonical frame; :mod:`digan.restore.quality`: PSNR/SSIM/depth error in the
restored region and the OpenCV Telea reference; :mod:`digan.restore.folder`: the command's
folder-in, folder-out driver.
"""

from digan.restore.core import Restoration, RestoreConfig, check_masks, estimate_damage, masked_inversion, restore  # noqa: F401

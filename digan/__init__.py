"""digan-bench: DIGAN (StyleGAN2 -> 3D distillation), baselines and a benchmark for 3D-aware face GANs.

Sub-packages
------------
``digan.render``   differentiable mesh renderer (pure PyTorch, optional PyTorch3D backend)
``digan.data``     synthetic ground-truth head busts and real-photo folder data sets
``digan.faces``    face detection, 5-point alignment and ArcFace embedding (ONNX)
``digan.teacher``  StyleGAN2 "G2D" teacher: networks, checkpoints, training
``digan.student``  DIGAN "G3D" student: sub-networks, losses, training, inference, export
``digan.utils``    atomic I/O, provenance records, progress bars, distributed helpers
"""

__version__ = "0.1.0"

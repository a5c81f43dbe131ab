"""Baseline methods (LiftGAN, HoloGAN, external methods, rendered-sample folders, 2D GANs).
Importing this package registers them with :mod:`evaluate.methods` (benchmark methods) and
:mod:`digan.student.registry` (trainable models ``liftgan`` and ``hologan``).

======================  ===================================================  =================================
module                  what                                                 names
======================  ===================================================  =================================
``liftgan``             native LiftGAN: DIGAN's G3D with LiftedGAN's          model and method ``liftgan``
                        settings; loads native and official checkpoints
``liftgan_checkpoint``  official LiftedGAN ``checkpoint_XXX.pth`` loader     (used by ``liftgan:PATH``)
``hologan``             native HoloGAN (3D volume, rotation, projection,     model and method ``hologan``
                        AdaIN, style discriminator)
``samples``             rendered-samples folder format, reader, writer       method ``samples:PATH``
``gan2d``               StyleGAN2-family checkpoints as 2D GANs              ``stylegan2``, ``ada``, ``apa``
``external``            DiscoFaceGAN / CONFIG-Net from a user install        ``discofacegan``, ``confignet``
======================  ===================================================  =================================
"""

from baselines import external, gan2d, hologan, liftgan, samples  # noqa: F401

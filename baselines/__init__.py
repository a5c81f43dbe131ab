"""Baseline methods (LiftGAN, HoloGAN, external methods, rendered-sample folders, 2D GANs).
Importing this package registers them with :mod:`evaluate.methods`."""

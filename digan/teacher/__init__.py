"""StyleGAN2 teacher (G2D)."""

"""Fast Diffusion Model reproduction pipeline."""

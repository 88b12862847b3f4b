"""sae_training: SAE ensembles (several seeds and data orders) trained from activation caches, saved as sae-lens folders.

Imports activations, never features or viewer.
"""

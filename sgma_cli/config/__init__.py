"""Schemas: one module each for recipes, the dataset manifest and checkpoints."""

"""Model bundles: manifest, loader, towers, training, evaluation and export."""

"""Datasets: loaders, class splits, decoding, augmentation and fitting images to a backbone's input."""

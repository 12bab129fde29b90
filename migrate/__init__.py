"""tf2torch conversion: TensorFlow/Keras saved models to PyTorch."""

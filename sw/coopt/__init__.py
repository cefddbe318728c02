"""Co-optimization of models and hardware: CF-MESMO and its baselines over design spaces."""

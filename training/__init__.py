"""training: recipes (setup / train / cleanup), the built-in model and the evaluation harness."""

"""Training, evaluation and checkpoints: what runs on the Ray Train workers and around them."""

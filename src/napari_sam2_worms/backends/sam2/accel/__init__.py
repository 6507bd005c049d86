"""Speed-ups installed on a sam2 video predictor (one module per sam2 module replaced)."""

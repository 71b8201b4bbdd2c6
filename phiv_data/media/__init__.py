"""Media helpers: image inspection and checks, video frame sampling backends."""

"""relay/media: the media backend interface and its in-process implementation."""

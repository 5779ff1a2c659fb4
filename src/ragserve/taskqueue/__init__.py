"""How ingestion work reaches the code that does it: in this process, or through a message broker."""

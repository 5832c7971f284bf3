"""facerec's service layer: the REST API, the gallery and the command line, on top of ``embeddings``."""

"""surrogate-faces core: torch-free code shared by training, export, the service and annotation."""

__version__ = "0.1.0"

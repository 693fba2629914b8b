"""Inference engines behind one interface: same pre-processed input, same raw outputs."""
from .base import Backend, BackendSpec, BackendUnavailable
from .registry import available_backends, create_backend

__all__ = ["Backend", "BackendSpec", "BackendUnavailable", "available_backends", "create_backend"]

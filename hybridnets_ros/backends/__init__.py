"""Inference engines behind one interface: same pre-processed input, same raw outputs."""
from .base import Backend, BackendUnavailable, RawOutputs
from .registry import available_backends, create_backend

__all__ = ["Backend", "BackendUnavailable", "RawOutputs", "available_backends", "create_backend"]

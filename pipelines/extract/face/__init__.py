"""Face features as interchangeable backends: MediaPipe face mesh + FER expressions (default,
offline), dlib (offline), py-feat (local weights), OpenFace CSV."""

from .base import DEFAULT_BACKEND, FaceBackend, available_backends, get_backend

__all__ = ["DEFAULT_BACKEND", "FaceBackend", "available_backends", "get_backend"]

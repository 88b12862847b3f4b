"""activations: corpora, model loading and the HDF5 activation cache (write, read, validate, import, synthesise).

The lowest package of xenofeat: it imports nothing from sae_training, features or viewer.
"""

from activations.cache import ActivationCache, CacheMeta, Context
from activations.errors import UserError
from activations.loader import ScanChunk

__all__ = ["ActivationCache", "CacheMeta", "Context", "ScanChunk", "UserError"]

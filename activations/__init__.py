"""activations: corpora, model loading and the HDF5 activation cache (write, read, validate, import, synthesise).

The lowest package of xenofeat: it imports nothing from sae_training, features or viewer.
"""

from activations.cache import ActivationCache, CacheMeta, Context, ScanChunk
from activations.errors import UserError

__all__ = ["ActivationCache", "CacheMeta", "Context", "ScanChunk", "UserError"]

"""Client for the DFIMat matting backend (pure Python + pyzmq), vendored into the GIMP and Krita plugins."""

from dfimat_client.client import BatchResult, Call, Client
from dfimat_client.config import Config, ConfigError, load_config
from dfimat_client.errors import AuthError, BackendError, BackendNotRunning, ProtocolVersionError
from dfimat_client.protocol import PROTOCOL_VERSION

__all__ = [
    "AuthError", "BackendError", "BackendNotRunning", "BatchResult", "Call", "Client", "Config", "ConfigError",
    "PROTOCOL_VERSION", "ProtocolVersionError", "load_config",
]
__version__ = "0.1.0"

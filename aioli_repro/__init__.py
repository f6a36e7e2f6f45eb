from .config import RunConfig

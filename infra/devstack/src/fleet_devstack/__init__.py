"""tuya-fleet's local stack: Apache Pulsar standalone and FerretDB as processes, no Docker."""

from .config import StackConfig
from .process import StackError
from .stack import LocalStack

__all__ = ["LocalStack", "StackConfig", "StackError"]

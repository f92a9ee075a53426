"""ragraph's typed client for Open Inference Protocol (V2) servers."""

from .errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RagraphError,
    ResourceExhausted,
    StreamError,
    Unauthenticated,
    Unavailable,
)
from .tensors import InferRequest, InferResponse, ModelMetadata, Tensor, TensorSpec

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "InvalidArgument",
    "NotFound",
    "RagraphError",
    "ResourceExhausted",
    "StreamError",
    "Unauthenticated",
    "Unavailable",
    "InferRequest",
    "InferResponse",
    "ModelMetadata",
    "Tensor",
    "TensorSpec",
]

"""alexnet_lib: the models, arithmetic and training loop behind the AlexNet notebook book."""

from .arithmetic import InputTooSmallError, check_input_size, conv_output_size, layer_table, receptive_fields
from .layers import LocalResponseNorm
from .models import count_parameters, get_model, list_models

__version__ = "0.1.0"

__all__ = [
    "InputTooSmallError",
    "LocalResponseNorm",
    "check_input_size",
    "conv_output_size",
    "count_parameters",
    "get_model",
    "layer_table",
    "list_models",
    "receptive_fields",
]

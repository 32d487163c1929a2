"""The seed's transformer, one concept per file."""

from keras_gpt.layers.attention import CausalSelfAttention
from keras_gpt.layers.block import TransformerBlock
from keras_gpt.layers.embedding import TokenEmbedding
from keras_gpt.layers.initializers import HostRandomNormal
from keras_gpt.layers.mlp import MLP
from keras_gpt.layers.positions import (PositionEmbedding, RotaryEmbedding,
                                        SinusoidalEncoding)
from keras_gpt.layers.unembedding import Unembedding

__all__ = ["CausalSelfAttention", "HostRandomNormal", "MLP",
           "PositionEmbedding", "RotaryEmbedding", "SinusoidalEncoding",
           "TokenEmbedding", "TransformerBlock", "Unembedding"]

"""Data pipeline: tokenizer, indexed datasets, C++ sample index, GLM blank infilling, loader.

Modules (imported explicitly; this package import stays free of torch so that tokenising
worker processes start quickly): ``tokenizer``, ``indexed_dataset``, ``preprocess``,
``sample_index`` (+ the ``_helpers`` extension), ``blank_infilling``, ``glm_dataset``,
``loader`` (collation and the data-parallel loader; imports torch), ``vocab_frequency``.
"""
from .errors import DataError
from .tokenizer import GLMTokenizer, SPECIAL_TOKENS

__all__ = ["DataError", "GLMTokenizer", "SPECIAL_TOKENS"]

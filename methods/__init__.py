"""Reasoning methods. Each registers itself with ``@register_method``; see ``methods/base.py``."""
from .base import METHODS, Method, coerce_options, register_method

__all__ = ["METHODS", "Method", "coerce_options", "register_method"]

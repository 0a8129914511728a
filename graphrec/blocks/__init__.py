"""Composable message-passing blocks and losses.

Blocks are ``nn.Module`` s that take the heterograph (or a relation of it) and node
features and return node features; each declares the relations it reads in a
``relations`` class attribute. Look them up by name with
``graphrec.registry.BLOCKS.get(name)``.
"""

from graphrec.blocks.bpr import bpr_loss, l2_reg
from graphrec.blocks.lightgcn import LightGCNConv, LightGCNPropagation

__all__ = ["LightGCNConv", "LightGCNPropagation", "bpr_loss", "l2_reg"]

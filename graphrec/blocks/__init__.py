"""Composable message-passing blocks and losses.

Blocks are ``nn.Module`` s that take the heterograph (or a relation of it) and node
features and return node features; each declares the relations it reads in a
``relations`` class attribute. Look them up by name with
``graphrec.registry.BLOCKS.get(name)``. Models plug registered blocks into their
*slots* (:mod:`graphrec.blocks.slots`); ``docs/extending.md`` describes the API.
"""

from graphrec.blocks.bootstrap import BootstrapAlignment
from graphrec.blocks.bpr import batch_bpr, batch_l2, bpr_loss, l2_reg
from graphrec.blocks.club import CLUB
from graphrec.blocks.content_head import ContentHead
from graphrec.blocks.denoise_align import agreement_weights, neighbour_discrimination, pseudo_neighbours, weighted_bpr
from graphrec.blocks.edge_attention import AffinityAttention, EdgeWeightedConv
from graphrec.blocks.edge_dropout import DegreeSensitivePruning, EdgeDropout
from graphrec.blocks.encoders import GeneralEncoder, SpecificEncoder
from graphrec.blocks.enhanced_conv import EnhancedConv
from graphrec.blocks.environments import CyclicMixup, invariance_penalty, mix_modalities
from graphrec.blocks.fine_coarse import FineCoarseContrast
from graphrec.blocks.fusion import ModalityFusion
from graphrec.blocks.generators import FeatureGenerator, ModalityDecoder, perturb
from graphrec.blocks.hyperedges import LearnableHyperedges, hyperedge_propagate
from graphrec.blocks.hypergraph import HypergraphPrototypeConv
from graphrec.blocks.infonce import infonce, infonce_all, infonce_all_gathered, infonce_gathered, infonce_rows
from graphrec.blocks.item_graph import ItemGraphConv, ItemGraphPropagation
from graphrec.blocks.learned_graph import LearnedKNNGraph
from graphrec.blocks.lightgcn import LightGCNConv, LightGCNPropagation
from graphrec.blocks.mgcn import BehaviorFuser, BehaviorPurifier
from graphrec.blocks.mmgcn import MMGCNLayer
from graphrec.blocks.modality_aggregation import ModalityAggregation
from graphrec.blocks.ngcf import NGCFConv
from graphrec.blocks.perturbed import PerturbedPropagation
from graphrec.blocks.preference import PreferenceGate
from graphrec.blocks.single_branch import SingleBranch
from graphrec.blocks.sinkhorn import SinkhornTransport
from graphrec.blocks.user_aggregation import UserAggregation

__all__ = [
    "AffinityAttention",
    "BehaviorFuser",
    "BehaviorPurifier",
    "BootstrapAlignment",
    "CLUB",
    "ContentHead",
    "CyclicMixup",
    "DegreeSensitivePruning",
    "EdgeDropout",
    "EdgeWeightedConv",
    "EnhancedConv",
    "FeatureGenerator",
    "FineCoarseContrast",
    "GeneralEncoder",
    "HypergraphPrototypeConv",
    "ItemGraphConv",
    "ItemGraphPropagation",
    "LearnableHyperedges",
    "LearnedKNNGraph",
    "LightGCNConv",
    "LightGCNPropagation",
    "MMGCNLayer",
    "ModalityAggregation",
    "ModalityDecoder",
    "ModalityFusion",
    "NGCFConv",
    "PerturbedPropagation",
    "PreferenceGate",
    "SingleBranch",
    "SinkhornTransport",
    "SpecificEncoder",
    "agreement_weights",
    "UserAggregation",
    "batch_bpr",
    "batch_l2",
    "bpr_loss",
    "hyperedge_propagate",
    "infonce",
    "infonce_all",
    "infonce_all_gathered",
    "infonce_gathered",
    "infonce_rows",
    "invariance_penalty",
    "l2_reg",
    "neighbour_discrimination",
    "mix_modalities",
    "perturb",
    "pseudo_neighbours",
    "weighted_bpr",
]

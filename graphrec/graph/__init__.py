"""Graph layer: the dataset heterograph and chunked (exact or approximate) kNN item-item graphs."""

from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch, ann_topk
from graphrec.graph.heterograph import IU, UI, build_heterograph, item_graph_matrix, knn_relation, refine_relation
from graphrec.graph.knn import blend_rows, build_knn_graph, knn_topk, mask_missing, sym_normalize

__all__ = [
    "IU",
    "KNN_SEARCH_DEFAULTS",
    "KnnSearch",
    "ann_topk",
    "UI",
    "blend_rows",
    "build_heterograph",
    "build_knn_graph",
    "item_graph_matrix",
    "knn_relation",
    "knn_topk",
    "mask_missing",
    "refine_relation",
    "sym_normalize",
]

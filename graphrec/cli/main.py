"""The ``graphrec`` command line (click + rich).

Every user-fixable problem is printed as one ``Error: ...`` line with exit status 2
(:class:`graphrec.cli.common.GraphrecGroup`). Commands live in one module per group:
:mod:`~graphrec.cli.train` (fit, evaluate), :mod:`~graphrec.cli.registry` (models, blocks),
:mod:`~graphrec.cli.data` (datasets, mask), :mod:`~graphrec.cli.generate` (refine-graph,
retrieve, retrieval-eval), :mod:`~graphrec.cli.recommend`, :mod:`~graphrec.cli.bench`, :mod:`~graphrec.cli.tune`,
:mod:`~graphrec.cli.featurize` and :mod:`~graphrec.cli.checkpoint`.
"""

from __future__ import annotations

import sys

import click

from graphrec.cli.common import CONTEXT, GraphrecGroup, _import_plugins, plugin_option

@click.group(cls=GraphrecGroup, context_settings=CONTEXT)
@click.version_option(package_name="graphrec")
@plugin_option
def cli(plugins) -> None:
    """graphrec: multimodal recommendation with missing modalities, on DGL heterographs.

    \b
    Quick start (embedded synthetic dataset, no files needed):
      graphrec fit lightgcn
      graphrec fit dgmrec --epochs 50 --out runs/dgmrec
      graphrec evaluate runs/dgmrec/model.pt
    \b
    Custom blocks and models (docs/extending.md):
      graphrec --plugin examples.attention_block fit dgmrec --set item_graph_block=attention_item_conv
    """
    _import_plugins(plugins)


from graphrec.cli import bench, checkpoint, data, featurize, generate, recommend, registry, train, tune  # noqa: E402

for _command in (train.fit, train.evaluate, registry.models, registry.blocks, data.datasets, data.mask,
                 generate.refine_graph, generate.retrieve, generate.retrieval_eval, recommend.recommend, bench.bench,
                 tune.tune, featurize.featurize, checkpoint.checkpoint):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="graphrec")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

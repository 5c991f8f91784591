"""Kedro datasets for the project: raw dataset layouts, domain-knowledge sources, tensors,
resumable shard folders, the xlsa17 export folder, and the library's value objects (a
trained backbone, class rows, the reference cache, the GZSL evaluation, the packaged
zero-shot classifier).

These are thin adapters from catalog entries to the library in ``niwt_pipeline.core``; swapping
the dataset or the domain-knowledge source is a change of catalog entry, never of code.
"""

from niwt_pipeline.datasets.backbone import TrainedBackboneDataset
from niwt_pipeline.datasets.classifier import ZeroShotClassifierDataset
from niwt_pipeline.datasets.domain_sources import (
    ClassEmbeddingsSource,
    CSVTableSource,
    NativeAttributesSource,
    TextEmbeddingsSource,
    Xlsa17AttributesSource,
)
from niwt_pipeline.datasets.export import Xlsa17ExportDataset
from niwt_pipeline.datasets.extra_classes import ExtraClassesDataset
from niwt_pipeline.datasets.raw_sources import (
    AttributeWorldDataset,
    AWA2Dataset,
    CUBDataset,
    OwnLayoutDataset,
)
from niwt_pipeline.datasets.shards import ShardStoreDataset
from niwt_pipeline.datasets.tensors import SafetensorsDataset, SafetensorsObjectDataset
from niwt_pipeline.datasets.trunk import TrunkActivationsDataset

__all__ = [
    "AWA2Dataset",
    "AttributeWorldDataset",
    "CSVTableSource",
    "CUBDataset",
    "ExtraClassesDataset",
    "ClassEmbeddingsSource",
    "NativeAttributesSource",
    "OwnLayoutDataset",
    "SafetensorsDataset",
    "SafetensorsObjectDataset",
    "TrunkActivationsDataset",
    "ShardStoreDataset",
    "TextEmbeddingsSource",
    "TrainedBackboneDataset",
    "Xlsa17AttributesSource",
    "Xlsa17ExportDataset",
    "ZeroShotClassifierDataset",
]

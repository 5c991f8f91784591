"""Catalog datasets whose load returns a domain-knowledge source.

A source turns a :class:`RawDataset` into a class x dimension table with its ``build``
method; the ingestion pipeline calls ``build`` without knowing which source it holds.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError


class _SourceDataset(AbstractDataset[None, Any]):
    """Constructs the library source class named by ``_source`` with the entry's options."""

    _source: str = ""

    def __init__(self, *, metadata: dict[str, Any] | None = None, **options: Any) -> None:
        self._options = options
        self.metadata = metadata

    def load(self) -> Any:
        from niwt_pipeline.core import domain

        return getattr(domain, self._source)(**self._options)

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is a read-only domain-knowledge source")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source, **self._options}


class NativeAttributesSource(_SourceDataset):
    """The class attributes that come with the layout (CUB, AWA2, own ``attributes.csv``)."""

    _source = "NativeAttributes"


class Xlsa17AttributesSource(_SourceDataset):
    """The ``att`` (or ``original_att``) matrix of an xlsa17 ``att_splits.mat``."""

    _source = "Xlsa17Attributes"


class ClassEmbeddingsSource(_SourceDataset):
    """Precomputed class embeddings in a ``.mat`` file (e.g. CUB's ``sent_splits.mat``)."""

    _source = "MatClassEmbeddings"


class CSVTableSource(_SourceDataset):
    """A user CSV ``class_name,<dim 1>,<dim 2>,...``."""

    _source = "CSVClassTable"


class TextEmbeddingsSource(_SourceDataset):
    """Class descriptions embedded offline with a sentence encoder (all-MiniLM-L6-v2 default)."""

    _source = "TextEmbeddings"

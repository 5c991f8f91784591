"""The validation's candidate search (:mod:`niwt_pipeline.core.validation`): input checks
that need no backbone (the search itself is tested on a real chain in
``tests/pipelines/validation``)."""

from __future__ import annotations

import pytest

from niwt_pipeline.core.validation import SearchConfig, search_candidates


def test_a_grid_key_without_values_is_refused_before_any_work():
    search = SearchConfig(niwt_grid={"logit_matching": []})
    # no input is touched before the check: every other argument may be None
    with pytest.raises(ValueError, match=r"grid\['logit_matching'\]: expected at least one"):
        search_candidates(*(None,) * 9, search, None, None)

"""Level-3: every study (and the bundled example) still gives its stored results.

A difference means the figures changed: if intended, regenerate with
``python -m tests.regression.update`` and commit the reviewed diff.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.regression.update import STORE, key, results, scenario_files


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: key(p))
def test_study_matches_stored_results(path):
    got = results(path)
    stored = {f.name.split("__")[-1][:-4]: f for f in STORE.glob(f"{key(path)}__*.csv")}
    assert set(got) == set(stored), "tables produced differ from the stored ones"
    for name, df in got.items():
        want = pd.read_csv(stored[name])
        have = pd.read_csv(pd.io.common.StringIO(df.to_csv(index=False)))
        assert list(have.columns) == list(want.columns), name
        assert len(have) == len(want), name
        for col in want.columns:
            a, b = have[col], want[col]
            if pd.api.types.is_numeric_dtype(b) and pd.api.types.is_numeric_dtype(a):
                np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9,
                                           equal_nan=True, err_msg=f"{name}.{col}")
            else:
                assert a.astype(str).tolist() == b.astype(str).tolist(), f"{name}.{col}"

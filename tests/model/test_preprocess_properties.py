"""Property test of inspector.model.preprocess: any array a camera could hand over is prepared or refused
with the project's own error, never an OpenCV or NumPy crash."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inspector.core.errors import InspectorError
from inspector.model.preprocess import PreprocessSpec, prepare_batch

SPEC = PreprocessSpec(
    resize_px=40, crop_px=32, keep_aspect=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
)
LETTERBOX = PreprocessSpec(
    resize_px=40, crop_px=32, keep_aspect=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
)
DTYPES = [np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]

arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype=dtype,
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=24),
        elements=None,
    )
)


@settings(max_examples=300, deadline=None)
@given(arrays, st.booleans())
def test_any_shape_dtype_and_channel_count_is_prepared_or_refused_with_an_inspector_error(
    image: np.ndarray, letterbox: bool
) -> None:
    spec = LETTERBOX if letterbox else SPEC
    try:
        prepared = prepare_batch([image], spec)
    except InspectorError as exc:
        assert str(exc)
        return
    assert prepared.tensor.shape == (1, 3, spec.crop_px, spec.crop_px)
    assert bool(np.isfinite(prepared.tensor.numpy()).all())

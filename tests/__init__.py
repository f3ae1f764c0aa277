"""The test suite; its folders mirror the inspector package."""

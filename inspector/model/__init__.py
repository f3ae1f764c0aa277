"""The SPADE model: pure math, the frozen backbone, preprocessing, the engine, and the gallery file and its build."""

"""inspector: real-time visual inspection with SPADE anomaly detection."""

import os

__version__ = "0.1.0"

OMP_WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
OMP_WAIT_POLICY_DEFAULT = "PASSIVE"

# The model worker shares CPU cores with the camera processes. With libgomp's default (threads spin while
# waiting), PyTorch on CPU became ~50x slower whenever another process was busy (measured on 2 cores: 650
# instead of 13 ms per frame); passive waiting removes that. libgomp reads the variable once, when torch is
# first loaded, so it is set here, before any module of this package can import torch; every command, tool
# and test that imports inspector gets it. An explicit value in the environment (e.g. OMP_WAIT_POLICY=ACTIVE
# on a dedicated machine) wins.
os.environ.setdefault(OMP_WAIT_POLICY_ENV, OMP_WAIT_POLICY_DEFAULT)

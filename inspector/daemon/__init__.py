"""The inspection daemon: lifecycle, status, the frame pipeline and ledger, the model worker and the sinks."""

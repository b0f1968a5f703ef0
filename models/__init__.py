"""Models side of the FusedEO core: encoders, compressors, probes, devices.

Importable without QGIS. torch, torchgeo and onnxruntime are imported inside
the functions that need them.
"""

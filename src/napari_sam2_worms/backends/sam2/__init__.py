"""The SAM 2 backend: sam2's video predictor behind the :class:`~..base.Backend` protocol.

:mod:`.adapter` holds the backend class; :mod:`.accel` the speed-ups installed on the
predictor. This package imports nothing heavy (no torch, no sam2) until a module is used.
"""

"""Calibrating the instrument: controls of known rotation invariance, measured with every metric.

* :mod:`~lielib.book.calibration.controls`: group-averaged networks (``C4``, ``C8``,
  ``C16``), an invariant and a non-invariant readout.
* :mod:`~lielib.book.calibration.measure`: every metric of the book per image, the paired
  contrasts theory orders, and the verdict per metric.
* :mod:`~lielib.book.calibration.run`: the run over the rotated-MNIST networks
  (``python -m lielib.book.calibration``).
"""

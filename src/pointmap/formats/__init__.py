"""Interchange file formats, one module each with its reader beside its writer: COLMAP sparse
models (:mod:`~pointmap.formats.colmap`) and nerfstudio ``transforms.json``
(:mod:`~pointmap.formats.nerfstudio`). Each converts between the file's conventions and pointmap's
(camera-to-world poses in OpenCV axes, pixel centres at integers) with the functions of
:mod:`pointmap.geometry.camera`; none takes a result type (``Scene``): the exporters build the
records from a scene, the known-camera reader turns them into priors.
"""

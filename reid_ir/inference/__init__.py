"""A trained run -> features of any images -> a saved gallery index -> search; model export.

* :class:`FeatureExtractor` (``extractor.py``): images -> L2-normalised features with
  the run's model, weights and test preprocessing;
* :class:`GalleryIndex` (``index.py``): exact or approximate (IVF, HNSW) faiss
  inner-product index over gallery features, saved with the gallery's paths;
* ``export.py``: TorchScript, ONNX and torchreid-format weights with parity checks;
* ``labels.py``: pid / camera from Market/Duke file names; ``page.py``: results as
  JSON and an HTML page. Command lines: ``tools/extract_features.py``,
  ``tools/search_gallery.py``, ``tools/export_model.py``.
"""

from reid_ir.inference.extractor import FeatureExtractor, build_test_transform
from reid_ir.inference.index import GalleryIndex

__all__ = ["FeatureExtractor", "GalleryIndex", "build_test_transform"]

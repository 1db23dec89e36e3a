"""Part segmentation for segmentation-guided anomaly detection (SADSeM, :mod:`vadkit.models.sadsem`).

A *partition* splits every image into the sub-classes of its object (a bottle's cap, body, label; or just the
two brightness regions of a surface): a float tensor ``(B, K, H, W)`` that is one-hot along K, part 0 being
whatever no part claims (the background). Two segmenters produce one, both ``torch.nn.Module``s taking
normalised images:

- :class:`OtsuPartition` (:mod:`.otsu`): no annotation; Otsu's threshold on brightness, cleaned by
  morphology: two parts, dark and bright. The documented fallback for data without part annotations.
- :class:`PartMaskRCNN` (:mod:`.maskrcnn`): torchvision's Mask R-CNN on an offline MobileNetV2-FPN, fine-tuned on
  a handful of annotated normal images (:mod:`.parts` reads the annotation folder).
"""

from vadkit.segmentation.otsu import OtsuPartition
from vadkit.segmentation.parts import PartAnnotations, read_part_annotations

__all__ = ["OtsuPartition", "PartAnnotations", "read_part_annotations"]

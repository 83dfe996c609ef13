"""Benchmarks of the published protocols on users' copies of the datasets (nothing is downloaded).

* ``imagenet-seg``: ImageNet-Segmentation / ImageNet-S, pixel accuracy, mIoU, mAP (Chefer et al.,
  TextSpan, LeGrad) — [`run_imagenet_seg`][vlexplain.eval.protocols.imagenet_seg.run_imagenet_seg].
* ``openimages-points``: OpenImages V7 point labels, p-mIoU (GEM, LeGrad) —
  [`run_openimages_points`][vlexplain.eval.protocols.openimages_points.run_openimages_points].
* ``openvocab-seg``: VOC / Pascal Context / COCO-Object / ADE20K mIoU (SCLIP, ClearCLIP, NACLIP) —
  [`run_openvocab_seg`][vlexplain.eval.protocols.openvocab_seg.run_openvocab_seg].
"""

#: benchmark kind -> (module, entry point)
KINDS: dict[str, tuple[str, str]] = {
    "imagenet-seg": ("vlexplain.eval.protocols.imagenet_seg", "run_imagenet_seg"),
    "openimages-points": ("vlexplain.eval.protocols.openimages_points", "run_openimages_points"),
    "openvocab-seg": ("vlexplain.eval.protocols.openvocab_seg", "run_openvocab_seg"),
}

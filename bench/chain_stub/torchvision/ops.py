"""Only the names onnx2torch imports; calling one is an error."""


def _missing(*args, **kwargs):
    raise NotImplementedError("torchvision is not installed in the generic-chain environment")


roi_align = nms = box_convert = _missing

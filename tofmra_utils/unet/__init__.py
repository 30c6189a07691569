"""The U-net of the study (Livne et al. 2019): model, training, whole-volume inference.

``model``  :class:`UNet` (no batch norm, ``depth`` poolings, sigmoid output).
``train``  :func:`train_unet` (negative soft Dice, Adam, resumable) and :func:`load_unet`.
``infer``  :func:`predict_volume` (study tiling, a blended sliding window or whole slices),
           :func:`segment_file` (NIfTI in, NIfTI out) and :func:`evaluate_subjects`.
``inference_net``  :class:`InferenceUNet`: the same function as a trained :class:`UNet`,
           prepared for fast evaluation (what :func:`predict_volume` runs).
"""

from .infer import evaluate_subjects, predict_volume, segment_file
from .inference_net import InferenceUNet
from .model import UNet
from .train import UnetTrainResult, load_unet, train_unet

__all__ = ["UNet", "InferenceUNet", "UnetTrainResult", "train_unet", "load_unet", "predict_volume", "segment_file", "evaluate_subjects"]

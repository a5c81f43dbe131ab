"""2D GANs of the paper's FID table as benchmark methods.

* ``stylegan2:CKPT``, ``ada:CKPT``, ``apa:CKPT``: StyleGAN2 networks (StyleGAN2-ADA and APA
  checkpoints are StyleGAN2 generators) loaded through the teacher's loader
  (:func:`digan.teacher.load_teacher`: rosinality ``.pt``, digan-bench ``.pt``, converted or
  original NVIDIA ADA ``.pkl``/state dicts, any resolution and channel table). They behave
  exactly like the ``teacher`` method (:class:`evaluate.teacher_method.TeacherMethod`): frontal
  images from z ~ N(0, I), truncation option ``truncation`` (default 1.0, the FID protocol),
  ``noise`` (``fixed``/``random``); capabilities say "2D GAN: no pose control" etc., so
  identity/pose/3D metrics are recorded as n/a with that reason. The separate names only label
  the rows of the tables (``ada:ffhq-ada`` vs ``stylegan2:ffhq``).
* Other 2D GANs (FastGAN, FreGAN, few-shot diffusion): export their samples to a folder and
  evaluate ``samples:FOLDER`` (a flat folder of images is read as frontal 2D samples, see
  :mod:`baselines.samples`).
"""

from __future__ import annotations

from typing import Any

from digan.errors import DiganError
from evaluate.methods import Method, register_method
from evaluate.teacher_method import TeacherMethod

__all__ = ["StyleGAN2Method", "GAN2D_NAMES"]

#: method name -> what it stands for (help text)
GAN2D_NAMES = {
    "stylegan2": "StyleGAN2",
    "ada": "StyleGAN2-ADA",
    "apa": "StyleGAN2 + APA",
}


class StyleGAN2Method(TeacherMethod):
    """A StyleGAN2-family checkpoint as a 2D method named ``stylegan2``, ``ada`` or ``apa``."""

    def __init__(self, name: str, path: str, truncation: float = 1.0, noise: str = "fixed", device: str = "cpu"):
        super().__init__(path, truncation=truncation, noise=noise, device=device)
        self.name = name

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"name": self.name, "family": GAN2D_NAMES[self.name]})
        return out


def _factory(name: str):
    def make(arg: str | None, truncation: float = 1.0, noise: str = "fixed", device: str = "cpu", variant: str = "full",
             **unknown: Any) -> Method:
        if unknown:
            raise DiganError(f"{name} has no option '{sorted(unknown)[0]}'; valid options: truncation, noise, device")
        if variant != "full":
            raise DiganError(f"{name} has no variant '{variant}'; use {name}:CHECKPOINT")
        if not arg:
            raise DiganError(f"{name} needs a checkpoint: {name}:PATH (rosinality .pt or NVIDIA .pkl of a {GAN2D_NAMES[name]} generator)")
        return StyleGAN2Method(name, arg, truncation=truncation, noise=noise, device=device)

    return make


for _name, _what in GAN2D_NAMES.items():
    register_method(_name, help=f"{_what} checkpoint as a 2D GAN (frontal only). {_name}:CHECKPOINT")(_factory(_name))

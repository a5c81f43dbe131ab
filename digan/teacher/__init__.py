"""StyleGAN2 teacher (G2D): pure-PyTorch generator/discriminator in the rosinality layout,
checkpoint loading/conversion, the student-facing :class:`Teacher` API and teacher training.

Student-facing entry points::

    from digan.teacher import Teacher, load_teacher
"""

from digan.teacher.api import Teacher, bundled_teacher_path, load_teacher
from digan.teacher.model import Discriminator, Generator, StyleGAN2Config, channel_table

__all__ = [
    "Teacher",
    "load_teacher",
    "bundled_teacher_path",
    "Generator",
    "Discriminator",
    "StyleGAN2Config",
    "channel_table",
]

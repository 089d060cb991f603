"""waifu-gen: a GAN that draws 64x64 anime faces."""

__version__ = "0.1.0"

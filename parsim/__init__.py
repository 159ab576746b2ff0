"""parsim: predict step time, memory and the best layout of distributed training."""
__version__ = "0.1.0"

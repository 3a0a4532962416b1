"""Images -> MNIST-style digits, in four steps, one module each; this module gathers their public names.

    images.py    decode a picture: limits, EXIF orientation, transparency          -> load_image
    ink.py       the paper, the ink's polarity and strength, ruled lines erased     -> find_ink
    segment.py   pieces of ink -> digits in reading order, each cut out             -> extract_digits, find_digits
    shape.py     one digit's ink -> MNIST's 28x28 form                              -> to_mnist

MNIST digits are white ink on black, fitted into a 20x20 box with their aspect ratio kept, anti-aliased,
and placed in a 28x28 field with their centre of mass at the centre. A model trained on them only reads
other pictures well once they are brought into that form:

    >>> from digitrec.preprocess import load_image, extract_digits
    >>> picture = load_image("photo.jpg")          # upright, alpha on white, (H, W) or (H, W, 3) uint8
    >>> crops = extract_digits(picture.pixels)      # in reading order
    >>> [(c.box, c.line) for c in crops]            # (x, y, w, h) in the photo's pixels
    [((112, 80, 61, 98), 0), ((190, 76, 70, 103), 0)]
    >>> crops[0].image.shape, crops[0].image.dtype
    ((28, 28), dtype('uint8'))

Nothing here knows about models: the crops go to whatever classifies them (see recognize.py).
"""

from digitrec.images import (IMAGE_SUFFIXES, MAX_PIXELS, ImageError, Picture, as_uint8_image, images_in,
                             load_image, to_gray)
from digitrec.ink import Ink, find_ink
from digitrec.segment import Crop, Found, Rejected, extract_digits, find_digits
from digitrec.shape import stroke_width, to_mnist

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "ImageError", "Picture", "as_uint8_image", "images_in", "load_image",
           "to_gray", "Ink", "find_ink", "Crop", "Found", "Rejected", "extract_digits", "find_digits", "stroke_width", "to_mnist"]

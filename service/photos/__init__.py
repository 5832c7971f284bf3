"""The photo library (opt-in, ``FACEREC_PHOTO_LIBRARY``): faces observed in indexed photos, FindSimilar search,
clusters of unnamed faces, naming them into gallery subjects. See docs/PHOTOS.md."""

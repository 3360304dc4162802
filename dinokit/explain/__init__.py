"""`dinokit explain`: DINO's internals on one image, from the model's own forward (capture.py),
as arrays in the image's pixels (explanation.py), figures (figures.py) and a page (html.py)."""

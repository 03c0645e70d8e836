"""``python -m logd.cli``: the same as the ``logd`` console script."""

from logd.cli import app

app()

"""The ``ios-tvm`` command line: :func:`main` (:mod:`ios_tvm.cli.main`), its arguments
(:mod:`~ios_tvm.cli.parser`), the commands (:mod:`~ios_tvm.cli.commands`) and the steps they share
(:mod:`~ios_tvm.cli.steps`), what they print (:mod:`~ios_tvm.cli.report`), what they load
(:mod:`~ios_tvm.cli.loading`), the files they write (:mod:`~ios_tvm.cli.output`) and the progress
lines (:mod:`~ios_tvm.cli.progress`)."""

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]

"""course_utils: the tested helper package behind the llm-workbook notebooks.

Import modules explicitly from their groups (``from course_utils.ground import machine``); this file stays light so that
``import course_utils`` never pulls in torch.
"""

import logging

__version__ = "0.1.0"


class _NoKernelsHubWarning(logging.Filter):
    """Drops one warning that bitsandbytes logs at import on CPUs with AVX-512 BF16.

    There it looks for a faster 4-bit CPU kernel that the optional ``kernels`` package downloads from the Hugging Face
    Hub, and, without it, asks for ``pip install kernels``. Its own packed kernel runs instead, and this workbook runs
    offline, where that download cannot happen. ``quant.bnb_path`` says which kernel runs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoKernelsHubWarning())

# transformers' load report, as a notebook page shows it: without colour codes, paths relative to the workbook.
from course_utils.reporting import stored_outputs as _stored_outputs  # noqa: E402 - after the filter above, stdlib only

_stored_outputs.install_log_filter()

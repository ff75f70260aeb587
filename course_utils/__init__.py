"""course_utils: the tested helper package behind the llm-workbook notebooks.

Import submodules explicitly (``from course_utils import env``); this file stays light so that
``import course_utils`` never pulls in torch.
"""

__version__ = "0.1.0"

"""Rebuild everything in data/ from scratch: `python data/build.py` (or `make data`)."""

from course_utils.data_build.build import build_all

if __name__ == "__main__":
    build_all()
